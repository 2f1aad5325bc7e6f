"""The imagerecords Beam job's distribution.

Installed on the machine that launches the job and, through ``--setup_file=./setup.py``, on every
Dataflow worker. It carries the ``pipeline`` and ``transforms`` packages; the record contract
comes from the reader distribution ``imagerecords`` (``reader/``), pinned to the same version.
"""

import pathlib
import re

import setuptools

_ROOT = pathlib.Path(__file__).parent
VERSION = re.search(r"__version__ = '([^']+)'",
                    (_ROOT / 'pipeline' / '__init__.py').read_text()).group(1)

setuptools.setup(
    name='imagerecords-pipeline',
    version=VERSION,
    description='Apache Beam job: folders of images -> sharded TFRecord files of tf.train.Example',
    long_description=(_ROOT / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    python_requires='>=3.10,<3.13',
    packages=setuptools.find_packages(include=['pipeline', 'transforms', 'transforms.*']),
    install_requires=[
        f'imagerecords=={VERSION}',
        'apache-beam[gcp]==2.77.0',
        'tensorflow==2.21.0',
        'tensorflow-transform==1.21.0',
        'pillow==12.3.0',
        'simplejpeg==1.9.0',
        'opencv-contrib-python-headless==5.0.0.93',
        'numpy==2.4.6',
        'google-crc32c==1.9.0',
        'tqdm==4.70.1',
        'psutil==7.2.2',
    ],
    entry_points={'console_scripts': ['imagerecords-convert=pipeline.run:main']},
)
