"""deploy/ checked against the code, offline: what can be proven without a cloud account.

- Flex Template: ``metadata.json`` lists exactly the job's options (both ways), each regex
  accepts the option's default and refuses bad values, and it is what ``make_metadata.py``
  writes; the entry point ``main.py`` turns template switches into the job's flags.
- Dockerfile: known instructions, FROM first, every copied path exists, the base image's Beam
  and Python versions are the installed ones, the Flex Template entry point names a copied
  file, and as in Google's sample nothing is staged for the workers to install (no setup or
  requirements file) and the launcher base image has a dated tag.
- YAML (Compose, Kubernetes, Cloud Build): parses; every Kubernetes object (and the
  FlinkDeployment's pod templates) matches the Kubernetes schemas of ``kubernetes-validate``,
  strictly; the FlinkDeployment uses only fields of the operator's CRD; the pods run as
  service accounts of deploy/, the job manager's with a Role to start task managers; the
  shared artifact volume names a ReadWriteMany storage class; the CronJob forbids overlap and
  passes ``--run_date``; the FlinkDeployment's task managers carry a worker pool on port 50000;
  every image tag's Beam version is the installed one.
- Airflow DAG: compiles, passes ``{{ ds }}`` as ``run_date``, names only known parameters, and
  imports under Airflow where Airflow is installed (it is not in the project's venv).
- Shell: ``bash -n``; ``launch.sh run`` builds the documented gcloud command; ``nightly.sh``
  publishes a dated run of the sample photos and then refuses the same date with status 2;
  the crontab line's ``flock -n`` turns an overlapping night into status 2.
- ``setup.py``'s sdist carries every module a worker imports.
"""

import argparse
import ast
import datetime
import fcntl
import importlib.util
import inspect
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tarfile

import apache_beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

import pipeline
from pipeline import options as job_options
from tests.helpers import REPO, SAMPLES

DEPLOY = REPO / 'deploy'
DATAFLOW = DEPLOY / 'dataflow'
SCHEDULE = DEPLOY / 'schedule'
BEAM_VERSION = apache_beam.__version__
PYTHON_VERSION = f'{sys.version_info.major}.{sys.version_info.minor}'


def _load(path: pathlib.Path):
  """A module of deploy/ (not a package) loaded from its file."""
  spec = importlib.util.spec_from_file_location(f'deploy_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _job_actions():
  """ConvertOptions' argparse actions by option name (the parser the job builds)."""
  parser = argparse.ArgumentParser(add_help=False)
  job_options.ConvertOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  return {action.dest: action for action in parser._actions}  # pylint: disable=protected-access


def _metadata():
  return json.loads((DATAFLOW / 'metadata.json').read_text(encoding='utf-8'))


def _yaml_documents():
  """(path, document) for every document of every YAML file under deploy/."""
  documents = []
  for path in sorted(DEPLOY.rglob('*.y*ml')):
    for document in yaml.safe_load_all(path.read_text(encoding='utf-8')):
      documents.append((path, document))
  return documents


def _kind(kind: str):
  found = [(path, doc) for path, doc in _yaml_documents()
           if isinstance(doc, dict) and doc.get('kind') == kind]
  assert found, f'no {kind} under deploy/'
  return found


# --- Flex Template metadata ---------------------------------------------------------------------

def test_metadata_parameters_are_exactly_the_job_options():
  names = [parameter['name'] for parameter in _metadata()['parameters']]
  assert len(names) == len(set(names)), 'a parameter is listed twice'
  options = set(_job_actions())
  assert not options - set(names), (
      f'options missing from metadata.json: {sorted(options - set(names))} '
      '(run .venv/bin/python deploy/dataflow/make_metadata.py)')
  extra = sorted(set(names) - options)
  assert not extra, f'parameters the job does not have: {extra}'


def test_metadata_json_is_what_make_metadata_writes():
  make_metadata = _load(DATAFLOW / 'make_metadata.py')
  assert (DATAFLOW / 'metadata.json').read_text(encoding='utf-8') == make_metadata.render(), (
      'metadata.json is stale: run .venv/bin/python deploy/dataflow/make_metadata.py')


def test_only_the_required_flags_are_required_parameters():
  required = {parameter['name'] for parameter in _metadata()['parameters']
              if not parameter['isOptional']}
  assert required == {'input_dir', 'output_dir'}
  for parameter in _metadata()['parameters']:
    assert parameter['label'].strip() and parameter['helpText'].strip(), parameter['name']
    assert re.fullmatch(r'[a-z][a-z0-9_]*', parameter['name'])


def _default_text(action):
  """The default as a template parameter value, or None when the option has none."""
  if action.default is None:
    return None
  if isinstance(action.default, bool):
    return 'true' if action.default else 'false'
  return str(action.default)


def _bad_values(action):
  """Values the option's regex must refuse: blank, shell junk, and one wrong for its kind."""
  bad = ['', 'x y;rm -rf /', 'two\nlines']
  if isinstance(action.default, bool) or (action.nargs == 0 and action.const is True):
    bad += ['maybe', 'True false']
  elif action.choices:
    bad += ['not_a_choice']
  elif action.type is int:
    bad += ['12abc', '1.5']
  elif action.type is float:
    bad += ['abc', '1,5']
  return bad


# Known options: a value the job would refuse, which the regex must refuse first.
_WRONG = {
    'input_dir': ['/local/folder', 'images', 'gs://'],
    'output_dir': ['/local/folder', 'C:\\out', 's3:/bucket'],
    'label_source': ['folders', 'file:/local/labels.csv', 'filename:'],
    'label_map': ['labels.txt', '/data/labels.txt'],
    'splits': ['train:0.8', 'train=0.8;validation=0.2'],
    'num_shards': ['0', 'train=0', 'four', 'train=8,validation'],
    'image_size': ['0', '-1', '256px'],
    'jpeg_quality': ['0', '101', '9O'],
    'max_pixels': ['0', '-5'],
    'max_jpeg_scans': ['0', '-1', '100.5'],
    'extensions': ['.jpg,,.png', '.jp g'],
    'max_failure_fraction': ['1.5', '-0.1', '5%'],
    'run_date': ['2026-13-01', '2026-1-1', '21.11.2026', '{{ ds }}'],
    'masks': ['pattern:', 'voc2012'],
    'background': ['white', '256,0', '#12345'],
}


def test_every_regex_accepts_the_default_and_refuses_bad_values():
  actions = _job_actions()
  for parameter in _metadata()['parameters']:
    action = actions[parameter['name']]
    assert len(parameter['regexes']) >= 1, parameter['name']
    patterns = [re.compile(regex) for regex in parameter['regexes']]

    def accepted(value, patterns=patterns):
      return all(pattern.fullmatch(value) for pattern in patterns)

    default = _default_text(action)
    if default is not None:
      assert accepted(default), (parameter['name'], default)
    for choice in action.choices or ():
      assert accepted(str(choice)), (parameter['name'], choice)
    for value in _bad_values(action) + _WRONG.get(parameter['name'], []):
      assert not accepted(value), f'{parameter["name"]}: the regex accepts {value!r}'


def test_help_texts_offer_no_value_the_regex_refuses():
  """A path option's help must not offer a local path where its regex wants a URL."""
  for parameter in _metadata()['parameters']:
    if parameter['name'] in ('input_dir', 'output_dir', 'label_map'):
      assert not any(re.fullmatch(regex, '/data/images') for regex in parameter['regexes'])
      assert 'local path is refused' in parameter['helpText'] or 'local' not in (
          parameter['helpText'].lower()), parameter
  (label_source,) = [p for p in _metadata()['parameters'] if p['name'] == 'label_source']
  assert "'file:' takes a gs:// or s3:// URL" in label_source['helpText']


def test_regexes_accept_typical_cloud_values():
  examples = {
      'input_dir': ['gs://my-bucket/images', 's3://bucket.example/a/b c/'],
      'output_dir': ['gs://my-bucket', 'gs://my-bucket/records/flowers'],
      'label_source': ['none', r'filename:^([a-z]+)\.\d+\.jpg$', 'file:gs://my-bucket/val.txt'],
      'label_map': ['gs://my-bucket/records/dt=2026-11-20/labels.txt'],
      'splits': ['folders', 'train=0.9,test=0.1'],
      'num_shards': ['64', 'train=64,validation=8'],
      'run_date': ['2026-11-21', '2024-02-29'],
      'extensions': ['.jpg,.png', 'jpg'],
      'max_failure_fraction': ['0', '1', '0.01', '.5'],
  }
  regexes = {p['name']: p['regexes'] for p in _metadata()['parameters']}
  for name, values in examples.items():
    if name not in regexes:
      continue
    for value in values:
      assert all(re.fullmatch(regex, value) for regex in regexes[name]), (name, value)


# --- Flex Template entry point ----------------------------------------------------------------

def test_template_entry_point_rewrites_switches_and_defaults_the_runner():
  main = _load(DATAFLOW / 'main.py')
  switches = main.switch_flags()
  stores_true = {f'--{name}' for name, action in _job_actions().items()
                 if action.nargs == 0 and action.const is True}
  assert switches == stores_true and '--overwrite' in switches
  argv = ['--input_dir=gs://b/in', '--overwrite=true', '--strict_labels=False',
          '--num_shards=train=8,validation=2', '--stats=false']
  assert main.template_argv(argv, switches) == [
      '--input_dir=gs://b/in', '--overwrite', '--num_shards=train=8,validation=2',
      '--stats=false', '--runner=DataflowRunner']
  assert main.template_argv(['--runner=FnApiRunner'], switches) == ['--runner=FnApiRunner']
  with pytest.raises(ValueError, match='--overwrite'):
    main.template_argv(['--overwrite=perhaps'], switches)


def test_template_entry_point_hands_switches_to_the_job(tmp_path):
  """--strict_labels=true reaches the job's validation as the switch it is (exit 2, the
  validation's reason), where plain argparse would have stopped at the '=true'."""
  result = subprocess.run(
      [sys.executable, str(DATAFLOW / 'main.py'), f'--input_dir={SAMPLES}',
       f'--output_dir={tmp_path / "out"}', '--strict_labels=true', '--runner=FnApiRunner'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert '--strict_labels needs --label_map' in result.stderr
  assert not (tmp_path / 'out').exists()


# --- Dockerfile ---------------------------------------------------------------------------------

DOCKERFILE_KEYWORDS = {
    'FROM', 'RUN', 'CMD', 'LABEL', 'MAINTAINER', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT',
    'VOLUME', 'USER', 'WORKDIR', 'ARG', 'ONBUILD', 'STOPSIGNAL', 'HEALTHCHECK', 'SHELL'}


def parse_dockerfile(text: str):
  """[(KEYWORD, arguments)] of a Dockerfile: comments dropped, continuation lines joined.

  Raises:
    ValueError: an unknown instruction, or a first instruction other than FROM (ARG allowed
      before it).
  """
  instructions, pending = [], ''
  for line in text.splitlines():
    stripped = line.strip()
    if not pending and (not stripped or stripped.startswith('#')):
      continue
    if pending and stripped.startswith('#'):
      continue  # a comment inside a continued instruction
    if stripped.endswith('\\'):
      pending += stripped[:-1].rstrip() + ' '
      continue
    full = (pending + stripped).strip()
    pending = ''
    keyword, _, arguments = full.partition(' ')
    if keyword.upper() not in DOCKERFILE_KEYWORDS:
      raise ValueError(f'unknown Dockerfile instruction {keyword!r}')
    instructions.append((keyword.upper(), arguments.strip()))
  if pending:
    raise ValueError('the Dockerfile ends inside a continued line')
  firsts = [keyword for keyword, _ in instructions if keyword != 'ARG']
  if not firsts or firsts[0] != 'FROM' or instructions[0][0] not in ('FROM', 'ARG'):
    raise ValueError('a Dockerfile must start with FROM')
  return instructions


def _dockerfile():
  return parse_dockerfile((DATAFLOW / 'Dockerfile').read_text(encoding='utf-8'))


def _substitute(text: str, variables: dict) -> str:
  return re.sub(r'\$\{(\w+)\}|\$(\w+)', lambda m: variables.get(m[1] or m[2], m[0]), text)


def test_dockerfile_parses_and_copies_only_what_exists():
  instructions = _dockerfile()
  copies = [args for keyword, args in instructions if keyword in ('COPY', 'ADD')]
  assert copies
  copied = []
  for args in copies:
    words = shlex.split(args)
    flags = [w for w in words if w.startswith('--')]
    paths = [w for w in words if not w.startswith('--')]
    assert len(paths) >= 2, args
    if any(flag.startswith('--from=') for flag in flags):
      continue  # from another image, not from the build context
    for source in paths[:-1]:
      assert (REPO / source).exists(), f'COPY source {source} is not in the repository'
      copied.append(source.rstrip('/'))
  for needed in ('requirements.txt', 'setup.py', 'README.md', 'reader', 'pipeline', 'transforms'):
    assert needed in copied, f'the image does not get {needed}'
  ignored = {line.strip().rstrip('/') for line in
             (DATAFLOW / 'Dockerfile.dockerignore').read_text().splitlines()
             if line.strip() and not line.startswith('#')}
  for source in copied:
    assert source.split('/')[0] not in ignored, f'{source} is copied but excluded from the context'


def test_dockerfile_base_image_is_the_installed_beam_and_python():
  instructions = _dockerfile()
  base = instructions[0][1] if instructions[0][0] == 'FROM' else None
  match = re.fullmatch(r'apache/beam_python(\d+\.\d+)_sdk:(\S+)', base or '')
  assert match, f'the first FROM is not a Beam Python SDK image: {base}'
  assert match[1] == PYTHON_VERSION, 'the image and the launcher must run the same Python'
  assert match[2] == BEAM_VERSION, 'the image and the launcher must run the same Beam'
  requirements = (REPO / 'requirements.txt').read_text()
  assert f'apache-beam=={BEAM_VERSION}' in requirements.splitlines()
  assert f'apache-beam[gcp]=={BEAM_VERSION}' in (REPO / 'setup.py').read_text()
  launcher = [args for keyword, args in instructions
              if keyword == 'COPY' and 'template-launcher-base' in args]
  assert launcher and f'python{PYTHON_VERSION.replace(".", "")}-template-launcher-base' in (
      launcher[0]), 'the Flex Template launcher must be the one for the same Python'
  tag = re.search(r'template-launcher-base:(\S+)', launcher[0])
  assert tag and re.fullmatch(r'\d{8}_RC\d{2}', tag[1]), (
      'pin a dated launcher tag (as Google\'s sample does), not :latest or no tag')


def test_dockerfile_flex_template_variables_name_copied_files():
  instructions = _dockerfile()
  variables = {}
  for keyword, args in instructions:
    if keyword == 'ARG' and '=' in args:
      name, _, value = args.partition('=')
      variables[name.strip()] = value.strip()
    elif keyword == 'ENV':
      name, _, value = args.partition('=')
      variables[name.strip()] = _substitute(value.strip().strip('"'), variables)
  workdir = _substitute(next(args for keyword, args in instructions if keyword == 'WORKDIR'),
                        variables)
  name = 'FLEX_TEMPLATE_PYTHON_PY_FILE'
  assert variables.get(name, '').startswith(workdir + '/'), name
  relative = variables[name][len(workdir) + 1:]
  assert (REPO / relative).is_file(), f'{name} names {relative}, not in the repository'
  assert variables[name].endswith('deploy/dataflow/main.py')
  # As in Google's sample (dataflow/flex-templates/pipeline_with_dependencies): the image holds
  # the package and its dependencies, so nothing is staged for the workers to pip-install at
  # start (which needs PyPI: no external IP and no Cloud NAT make it fail).
  for staged in ('FLEX_TEMPLATE_PYTHON_SETUP_FILE', 'FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE',
                 'FLEX_TEMPLATE_PYTHON_EXTRA_PACKAGES'):
    assert staged not in variables, f'{staged} makes every worker install from PyPI'
  installed = ' '.join(args for keyword, args in instructions if keyword == 'RUN')
  assert 'pip install' in installed and '-r requirements.txt' in installed and ' . ' in (
      installed + ' '), 'the image installs the pinned requirements and the job itself'
  entrypoint = [args for keyword, args in instructions if keyword == 'ENTRYPOINT']
  assert entrypoint and json.loads(entrypoint[-1]) == ['/opt/apache/beam/boot'], (
      "the image is also the workers' SDK container: Beam's boot must stay its entrypoint")


# --- YAML: Compose, Kubernetes, Cloud Build -----------------------------------------------------

def _images(node):
  """Every value of an 'image' key in a parsed YAML document."""
  if isinstance(node, dict):
    for key, value in node.items():
      if key == 'image' and isinstance(value, str):
        yield value
      else:
        yield from _images(value)
  elif isinstance(node, list):
    for item in node:
      yield from _images(item)


def _beam_version_of(image: str):
  """The Beam version an image tag names ('apache/beam_*:2.77.0', 'imagerecords:0.1.0-beam2.77.0'),
  or None."""
  match = re.search(r'apache/beam_[^:]+:(\d+\.\d+\.\d+)$', image) or re.search(
      r'-beam(\d+\.\d+\.\d+)$', image)
  return match[1] if match else None


def test_every_yaml_file_parses():
  paths = sorted(DEPLOY.rglob('*.y*ml'))
  assert len(paths) >= 5
  for path in paths:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding='utf-8'))]
    assert documents and all(isinstance(d, dict) for d in documents), path


def test_every_beam_image_tag_is_the_installed_beam():
  checked = 0
  for path, document in _yaml_documents():
    for image in _images(document):
      if 'beam' in image:
        version = _beam_version_of(image)
        assert version == BEAM_VERSION, f'{path.name}: {image} (installed Beam {BEAM_VERSION})'
        checked += 1
      if 'imagerecords:' in image:  # the job's image: <job version>-beam<beam version>
        assert image.rsplit(':', 1)[1].startswith(pipeline.__version__ + '-beam'), (
            f'{path.name}: {image}: the tag is <job version>-beam<Beam version>')
  assert checked >= 4


def test_cronjob_forbids_overlap_and_passes_the_run_date():
  (path, cronjob), = _kind('CronJob')
  spec = cronjob['spec']
  assert spec['concurrencyPolicy'] == 'Forbid'
  assert len(spec['schedule'].split()) == 5
  pod = spec['jobTemplate']['spec']['template']['spec']
  assert pod['restartPolicy'] == 'Never'
  (container,) = pod['containers']
  command = ' '.join(container.get('command', []) + container.get('args', []))
  assert '-m pipeline.run' in command, path
  assert re.search(r'--run_date="?\$\(date -u \+%F\)', command), command
  names = {e['name'] for e in container.get('env', [])}
  assert {'INPUT_DIR', 'OUTPUT_DIR'} <= names
  # the pod's shell line, expanded as the pod would (printf in place of python)
  script = ' '.join(container['args'])
  assert script.startswith('exec python -m pipeline.run ')
  before = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
  shown = subprocess.run(
      ['sh', '-c', script.replace('exec python', 'exec printf "%s\\n"', 1)],
      env=dict(os.environ, INPUT_DIR='gs://my-bucket/in dir', OUTPUT_DIR='gs://my-bucket/out'),
      capture_output=True, text=True, check=True).stdout.splitlines()
  after = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
  assert shown[:2] == ['-m', 'pipeline.run']
  assert {f'--run_date={before}', f'--run_date={after}'} & set(shown)
  assert '--input_dir=gs://my-bucket/in dir' in shown
  flags = {arg[2:].split('=', 1)[0] for arg in shown[2:]}
  unknown = flags - set(_job_actions()) - _beam_option_names()
  assert not unknown, f'the CronJob passes unknown flags {sorted(unknown)}'


def test_flink_deployment_task_managers_carry_a_worker_pool_sidecar():
  (_, deployment), = _kind('FlinkDeployment')
  spec = deployment['spec']
  containers = spec['taskManager']['podTemplate']['spec']['containers']
  pools = [c for c in containers if '--worker_pool' in c.get('args', [])]
  assert len(pools) == 1, 'one worker-pool sidecar per task manager'
  (pool,) = pools
  assert 50000 in [port['containerPort'] for port in pool.get('ports', [])]
  assert _beam_version_of(pool['image']) == BEAM_VERSION
  flink = spec['flinkVersion']  # v1_19
  (_, server), = [(p, d) for p, d in _kind('Deployment')
                  if 'job-server' in d['metadata']['name']]
  (job_server,) = server['spec']['template']['spec']['containers']
  assert f'beam_flink{flink[1:].replace("_", ".")}_job_server' in job_server['image']
  assert f'--flink-master={deployment["metadata"]["name"]}-rest:8081' in job_server['args']
  # the job server's artifact directory is the task managers' too (same claim, same path)
  artifacts = next(a for a in job_server['args'] if a.startswith('--artifacts-dir='))
  mount = artifacts.split('=', 1)[1]
  main = next(c for c in containers if c['name'] == 'flink-main-container')
  claims = {v['name']: v['persistentVolumeClaim']['claimName']
            for v in spec['taskManager']['podTemplate']['spec']['volumes']}
  server_claims = {v['name']: v['persistentVolumeClaim']['claimName']
                   for v in server['spec']['template']['spec']['volumes']}
  tm_mounts = {m['mountPath']: claims[m['name']] for m in main['volumeMounts']}
  js_mounts = {m['mountPath']: server_claims[m['name']] for m in job_server['volumeMounts']}
  assert tm_mounts.get(mount) == js_mounts.get(mount) is not None
  (_, claim), = _kind('PersistentVolumeClaim')
  assert claim['metadata']['name'] == js_mounts[mount]
  assert 'ReadWriteMany' in claim['spec']['accessModes']


# Kubernetes version the manifests are validated for (kubernetes-validate bundles the schemas of
# every release; 1.33 is offered by GKE's and EKS's standard channels in 2026).
KUBERNETES_VERSION = '1.33.0'

# The Flink Kubernetes Operator's FlinkDeployment (flink.apache.org/v1beta1), as its CRD
# helm/flink-kubernetes-operator/crds/flinkdeployments.flink.apache.org-v1.yml defines it. No
# package on PyPI ships that CRD and nothing can be downloaded here, so these are the fields it
# lists, written down from it; the pod templates inside are checked against Kubernetes' own Pod
# schema.
FLINK_DEPLOYMENT_SPEC_FIELDS = {
    'flinkConfiguration', 'flinkVersion', 'image', 'imagePullPolicy', 'ingress', 'job',
    'jobManager', 'logConfiguration', 'mode', 'podTemplate', 'restartNonce', 'serviceAccount',
    'taskManager'}
FLINK_COMPONENT_FIELDS = {'podTemplate', 'replicas', 'resource'}  # jobManager, taskManager
FLINK_RESOURCE_FIELDS = {'cpu', 'memory', 'ephemeralStorage'}
FLINK_VERSIONS = {'v1_13', 'v1_14', 'v1_15', 'v1_16', 'v1_17', 'v1_18', 'v1_19', 'v1_20'}


def _kubernetes_documents():
  """(path, document) of every Kubernetes object under deploy/ (Compose and Cloud Build files
  have no apiVersion)."""
  return [(path, doc) for path, doc in _yaml_documents() if 'apiVersion' in doc and 'kind' in doc]


def test_kubernetes_manifests_match_the_kubernetes_schemas():
  import kubernetes_validate  # pylint: disable=import-outside-toplevel
  checked = set()
  for path, document in _kubernetes_documents():
    if document['kind'] == 'FlinkDeployment':
      for component in ('jobManager', 'taskManager'):
        template = document['spec'].get(component, {}).get('podTemplate')
        if template:
          kubernetes_validate.validate(template, KUBERNETES_VERSION, strict=True)
          checked.add(f'FlinkDeployment.{component}.podTemplate')
      continue
    # strict: a misspelled or misplaced field is an error, as `kubectl apply` would report
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    checked.add(document['kind'])
  assert {'CronJob', 'Deployment', 'Service', 'PersistentVolumeClaim', 'ServiceAccount', 'Role',
          'RoleBinding', 'FlinkDeployment.taskManager.podTemplate'} <= checked, checked


def test_kubernetes_schema_check_refuses_a_misspelled_field():
  import kubernetes_validate  # pylint: disable=import-outside-toplevel
  (_, cronjob), = _kind('CronJob')
  broken = json.loads(json.dumps(cronjob))
  broken['spec']['jobTemplate']['spec']['template']['spec']['serviceAcountName'] = 'x'
  with pytest.raises(kubernetes_validate.ValidationError, match='serviceAcountName'):
    kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_flink_deployment_uses_only_fields_of_the_operator_crd():
  (_, deployment), = _kind('FlinkDeployment')
  assert deployment['apiVersion'] == 'flink.apache.org/v1beta1'
  spec = deployment['spec']
  unknown = set(spec) - FLINK_DEPLOYMENT_SPEC_FIELDS
  assert not unknown, sorted(unknown)
  assert spec['flinkVersion'] in FLINK_VERSIONS
  # flinkConfiguration: a map of strings in the CRD (a bare YAML number would be refused)
  assert all(isinstance(value, str) for value in spec['flinkConfiguration'].values())
  for component in ('jobManager', 'taskManager'):
    assert not set(spec[component]) - FLINK_COMPONENT_FIELDS, component
    resource = spec[component]['resource']
    assert not set(resource) - FLINK_RESOURCE_FIELDS, component
    assert isinstance(resource['cpu'], (int, float)) and isinstance(resource['memory'], str)


def test_every_pod_runs_as_a_service_account_of_deploy():
  """Storage access on Kubernetes comes from the pods' service accounts (Workload Identity on
  GKE, IRSA on EKS), which deploy/ creates, and the job manager's rights to start task managers
  are those of the operator chart's own account."""
  accounts = {doc['metadata']['name'] for _, doc in _kind('ServiceAccount')}
  (_, deployment), = _kind('FlinkDeployment')
  assert deployment['spec']['serviceAccount'] in accounts
  (_, cronjob), = _kind('CronJob')
  assert cronjob['spec']['jobTemplate']['spec']['template']['spec'][
      'serviceAccountName'] in accounts
  bindings = [doc for _, doc in _kind('RoleBinding')
              if any(subject['name'] == deployment['spec']['serviceAccount']
                     for subject in doc['subjects'])]
  assert bindings, 'the job manager needs a Role to create task-manager pods'
  roles = {doc['metadata']['name']: doc for _, doc in _kind('Role')}
  rules = roles[bindings[0]['roleRef']['name']]['rules']
  granted = {(group, resource, verb) for rule in rules for group in rule['apiGroups']
             for resource in rule['resources'] for verb in rule['verbs']}
  for verb in ('create', 'delete', 'watch'):
    assert ('', 'pods', verb) in granted and ('', 'configmaps', verb) in granted


def test_the_shared_artifact_volume_names_a_read_write_many_storage_class():
  (_, claim), = _kind('PersistentVolumeClaim')
  assert claim['spec']['accessModes'] == ['ReadWriteMany']
  # GKE's and EKS's default classes are ReadWriteOnce: a claim without a class stays Pending
  assert claim['spec'].get('storageClassName'), 'name a ReadWriteMany storage class'


def test_compose_runs_flink_a_job_server_and_a_worker_pool_of_one_beam_version():
  compose = yaml.safe_load((DEPLOY / 'flink' / 'docker-compose.yml').read_text())
  services = compose['services']
  by_command = {name: ' '.join(s['command']) if isinstance(s.get('command'), list)
                else str(s.get('command', '')) for name, s in services.items()}
  jobmanager = next(n for n, c in by_command.items() if c == 'jobmanager')
  taskmanager = next(n for n, c in by_command.items() if c == 'taskmanager')
  pool = next(n for n, c in by_command.items() if '--worker_pool' in c)
  server = next(n for n, s in services.items() if 'job_server' in s.get('image', ''))
  assert services[pool]['network_mode'] == f'service:{taskmanager}'
  assert (REPO / services[pool]['build']['dockerfile']).is_file()
  assert (DEPLOY / 'flink' / services[pool]['build']['context']).resolve() == REPO
  for name in (pool, server):
    assert _beam_version_of(services[name]['image']) == BEAM_VERSION, name
  flink = services[jobmanager]['image'].split(':')[1]
  assert services[taskmanager]['image'] == services[jobmanager]['image']
  assert f'beam_flink{flink}_job_server' in services[server]['image']
  assert f'--flink-master={jobmanager}:8081' in services[server]['command']
  staged = next(a for a in services[server]['command'] if a.startswith('--artifacts-dir='))
  path = staged.split('=', 1)[1]
  for name in (server, taskmanager):
    assert any(v.endswith(':' + path) for v in services[name]['volumes']), name


def test_cloud_build_builds_the_dockerfile():
  build = yaml.safe_load((DATAFLOW / 'cloudbuild.yaml').read_text())
  args = build['steps'][0]['args']
  dockerfile = next(a for a in args if a.startswith('--file=')).split('=', 1)[1]
  assert (REPO / dockerfile).resolve() == (DATAFLOW / 'Dockerfile').resolve()
  assert args[-1] == '.' and build['images'] == ['${_IMAGE}']


# --- Airflow DAG --------------------------------------------------------------------------------

DAG_FILE = SCHEDULE / 'imagerecords_nightly.py'


def _beam_option_names():
  """Every option name Beam knows (its own and every registered PipelineOptions subclass)."""
  return set(PipelineOptions([]).get_all_options())


def test_dag_compiles_and_passes_the_logical_date_as_run_date():
  source = DAG_FILE.read_text(encoding='utf-8')
  tree = ast.parse(compile(source, str(DAG_FILE), 'exec', ast.PyCF_ONLY_AST))
  calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
           and getattr(node.func, 'id', None) == 'DataflowStartFlexTemplateOperator']
  assert len(calls) == 1, 'one task'
  parameters = next(node for node in ast.walk(tree) if isinstance(node, ast.Dict) and any(
      isinstance(k, ast.Constant) and k.value == 'run_date' for k in node.keys))
  values = {k.value: v.value for k, v in zip(parameters.keys, parameters.values)}
  assert values['run_date'] == '{{ ds }}'
  known = set(_job_actions()) | _beam_option_names()
  assert not set(values) - known, f'unknown parameters {sorted(set(values) - known)}'
  environment = next(node for node in ast.walk(tree) if isinstance(node, ast.Dict) and any(
      isinstance(k, ast.Constant) and k.value == 'machineType' for k in node.keys))
  fields = {k.value for k in environment.keys}
  assert not fields - FLEX_ENVIRONMENT_FIELDS, sorted(fields - FLEX_ENVIRONMENT_FIELDS)


# Dataflow API v1b3 FlexTemplateRuntimeEnvironment (a launch body's 'environment').
FLEX_ENVIRONMENT_FIELDS = {
    'additionalExperiments', 'additionalUserLabels', 'autoscalingAlgorithm', 'diskSizeGb',
    'dumpHeapOnOom', 'enableLauncherVmSerialPortLogging', 'enableStreamingEngine', 'flexrsGoal',
    'ipConfiguration', 'kmsKeyName', 'launcherMachineType', 'machineType', 'maxWorkers',
    'network', 'numWorkers', 'saveHeapDumpsToGcsPath', 'sdkContainerImage',
    'serviceAccountEmail', 'stagingLocation', 'subnetwork', 'tempLocation', 'workerRegion',
    'workerZone', 'zone'}


def test_dag_imports_under_airflow(tmp_path, monkeypatch):
  if importlib.util.find_spec('airflow') is None:
    pytest.skip('Airflow is not installed: it is kept out of the project venv, where its Google '
                'provider would move pins of requirements.txt (google-api-python-client>=2.194 '
                'against ==1.12.11); the DAG was only compiled and inspected')
  monkeypatch.setenv('AIRFLOW_HOME', str(tmp_path))
  from airflow.models import DagBag  # pylint: disable=import-outside-toplevel
  options = {}
  if 'include_examples' in inspect.signature(DagBag).parameters:  # Airflow 2
    options['include_examples'] = False
  bag = DagBag(dag_folder=str(DAG_FILE), **options)
  assert not bag.import_errors, bag.import_errors
  dag = bag.dags['imagerecords_nightly']
  assert [task.task_id for task in dag.tasks] == ['convert']
  assert dag.max_active_runs == 1


# --- shell scripts ------------------------------------------------------------------------------

def test_shell_scripts_parse():
  scripts = sorted(DEPLOY.rglob('*.sh'))
  assert {p.name for p in scripts} >= {'launch.sh', 'nightly.sh'}
  for script in scripts:
    result = subprocess.run(['bash', '-n', str(script)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, f'{script}: {result.stderr}'
    assert os.access(script, os.X_OK), f'{script} is not executable'


def _crontab_entry():
  """(schedule fields, command) of the one job line of deploy/schedule/crontab."""
  lines = [line for line in (SCHEDULE / 'crontab').read_text().splitlines()
           if line.strip() and not line.startswith('#') and not re.match(r'^\w+=', line)]
  assert len(lines) == 1, lines
  fields = lines[0].split(None, 5)
  return fields[:5], fields[5]


def test_crontab_line_runs_nightly_sh_under_flock():
  schedule, command = _crontab_entry()
  assert all(re.fullmatch(r'[\d*/,-]+', field) for field in schedule), schedule
  words = shlex.split(command)
  assert words[0] == 'flock' and '-n' in words, 'overlapping nights must not both run'
  assert words[-1].endswith('deploy/schedule/nightly.sh')


def test_launch_sh_run_passes_every_flag_as_a_template_parameter(tmp_path):
  """launch.sh against a recording stand-in for the gcloud CLI (no cloud here)."""
  record = tmp_path / 'gcloud.args'
  fake = tmp_path / 'bin' / 'gcloud'
  fake.parent.mkdir()
  fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(record))}\n')
  fake.chmod(0o755)
  env = dict(os.environ, PATH=f'{fake.parent}{os.pathsep}{os.environ["PATH"]}',
             PROJECT='my-project', BUCKET='my-bucket', JOB_NAME='imagerecords-test')
  result = subprocess.run(
      [str(DATAFLOW / 'launch.sh'), 'run', '--input_dir=gs://my-bucket/in',
       '--output_dir=gs://my-bucket/out', '--num_shards=train=8,validation=2', '--overwrite=true'],
      env=env, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  args = record.read_text().splitlines()
  assert args[:4] == ['dataflow', 'flex-template', 'run', 'imagerecords-test']
  image = ('us-central1-docker.pkg.dev/my-project/imagerecords/imagerecords:'
           f'{pipeline.__version__}-beam{BEAM_VERSION}')
  assert f'--parameters=sdk_container_image={image}' in args
  assert ('--template-file-gcs-location=gs://my-bucket/templates/imagerecords-'
          f'{image.rsplit(":", 1)[1]}.json') in args
  assert '--parameters=^~^num_shards=train=8,validation=2' in args
  assert '--parameters=^~^overwrite=true' in args
  names = {re.sub(r'^\^~\^', '', a.split('=', 1)[1]).split('=', 1)[0]
           for a in args if a.startswith('--parameters=')}
  known = set(_job_actions()) | _beam_option_names()
  assert not names - known, f'launch.sh passes unknown parameters {sorted(names - known)}'
  refused = subprocess.run([str(DATAFLOW / 'launch.sh'), 'run', 'input'], env=env,
                           capture_output=True, text=True, check=False)
  assert refused.returncode == 2 and 'expected --name=value' in refused.stderr


@pytest.fixture(scope='module')
def nightly_runs(tmp_path_factory):
  """nightly.sh run twice for the same date on the sample photos (tiny images, one shard)."""
  root = tmp_path_factory.mktemp('nightly')
  env = dict(os.environ, INPUT_DIR=str(SAMPLES), OUTPUT_DIR=str(root / 'records'),
             RUN_DATE='2026-11-21', LOG_DIR=str(root / 'logs'), PYTHON=sys.executable)
  flags = ['--image_size=32', '--num_shards=1', '--direct_running_mode=in_memory']
  if 'stats' in _job_actions():
    flags.append('--stats=false')  # the TensorFlow analysis is not what is tested here
  runs = [subprocess.run([str(SCHEDULE / 'nightly.sh'), *flags], env=env, capture_output=True,
                         text=True, timeout=600, check=False) for _ in range(2)]
  return {'root': root, 'env': env, 'flags': flags, 'runs': runs}


@pytest.mark.slow
def test_nightly_sh_publishes_a_dated_run_silently(nightly_runs):
  first = nightly_runs['runs'][0]
  records = nightly_runs['root'] / 'records'
  log = nightly_runs['root'] / 'logs' / 'nightly-2026-11-21.log'
  assert first.returncode == 0, f'{first.stderr}\n{log.read_text()[-4000:]}'
  assert first.stdout == first.stderr == '', 'silent on success (cron mails any output)'
  assert (records / 'dt=2026-11-21' / '_SUCCESS').is_file()
  assert (records / 'LATEST').read_text().strip() == 'dt=2026-11-21'


def test_nightly_sh_refuses_a_published_date_with_status_2(nightly_runs):
  second = nightly_runs['runs'][1]
  assert second.returncode == 2
  line, = second.stderr.strip().splitlines()
  assert line.startswith('imagerecords nightly 2026-11-21: exit 2 (nothing ran): ')
  assert 'already published' in line


@pytest.mark.skipif(shutil.which('flock') is None, reason='util-linux flock is not installed')
def test_crontab_flock_makes_an_overlapping_night_exit_2(nightly_runs, tmp_path):
  _, command = _crontab_entry()
  words = shlex.split(command)
  lock = tmp_path / 'nightly.lock'
  assert words[-2].endswith('.lock'), 'flock [options] LOCKFILE nightly.sh'
  words[-2], words[-1] = str(lock), str(SCHEDULE / 'nightly.sh')
  env = dict(nightly_runs['env'], RUN_DATE='2026-11-22')
  with open(lock, 'w') as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the previous night, still running
    result = subprocess.run(words, env=env, capture_output=True, text=True, timeout=60,
                            check=False)
  assert result.returncode == 2, result.stderr
  assert not (nightly_runs['root'] / 'records' / 'dt=2026-11-22').exists()


# --- the sdist workers install ------------------------------------------------------------------

def _first_party_imports(path: pathlib.Path, package: str):
  """Absolute module names imported by a module of ``package`` (relative imports resolved)."""
  tree = ast.parse(path.read_text(encoding='utf-8'))
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parts = package.split('.')[:len(package.split('.')) - node.level + 1]
        base = '.'.join(parts + ([base] if base else []))
      names.add(base)
      names.update(f'{base}.{alias.name}' for alias in node.names)
  return names


def _module_file(root: pathlib.Path, name: str):
  """The file of module ``name`` under ``root`` (a .py or a package's __init__.py), or None."""
  path = root.joinpath(*name.split('.'))
  for candidate in (path.with_suffix('.py'), path / '__init__.py'):
    if candidate.is_file():
      return candidate
  return None


def test_sdist_carries_every_module_a_worker_imports(tmp_path):
  result = subprocess.run(
      [sys.executable, 'setup.py', '-q', 'egg_info', f'--egg-base={tmp_path}', 'sdist',
       f'--dist-dir={tmp_path}'], cwd=REPO, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  (sdist,) = tmp_path.glob('*.tar.gz')
  with tarfile.open(sdist) as archive:
    members = {name.split('/', 1)[1] for name in archive.getnames() if '/' in name}
  assert 'setup.py' in members and 'README.md' in members  # setup.py reads README.md

  job_packages = ('pipeline', 'transforms')
  reader_root = REPO / 'reader'
  first_party = {p.name for p in REPO.iterdir() if (p / '__init__.py').is_file()}
  first_party |= {p.name for p in reader_root.iterdir() if (p / '__init__.py').is_file()}
  # every module of the job's packages, and everything they import from this repository
  todo = [f'{pkg}.{p.stem}' if p.stem != '__init__' else pkg
          for pkg in job_packages for p in sorted((REPO / pkg).glob('*.py'))]
  seen, from_reader = set(), set()
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    top = name.split('.')[0]
    if top not in first_party:
      continue
    if top in job_packages:
      path = _module_file(REPO, name)
      if path is None:
        continue  # a name imported from a module (from transforms.image.codec import ImageSpec)
      assert path.relative_to(REPO).as_posix() in members, f'{name} is not in the sdist'
      package = name if path.name == '__init__.py' else name.rpartition('.')[0]
      todo.extend(_first_party_imports(path, package))
    elif _module_file(reader_root, name) is not None:
      from_reader.add(name)
      path = _module_file(reader_root, name)
      package = name if path.name == '__init__.py' else name.rpartition('.')[0]
      todo.extend(_first_party_imports(path, package))
    elif _module_file(REPO, name) is not None:  # tests/, bench/, ...: not on a worker
      pytest.fail(f'workers import {name}, which is neither in the sdist nor in the reader '
                  'distribution')
  assert 'pipeline.run' in seen and len(seen) > 10
  # the reader's modules come from the 'imagerecords' distribution the sdist requires
  assert from_reader and {n.split('.')[0] for n in from_reader} == {'imagerecords'}
  pyproject = (reader_root / 'pyproject.toml').read_text()
  reader_version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)[1]
  assert re.search(r'^packages = \[[^]]*"imagerecords"', pyproject, re.MULTILINE)
  (requires,) = tmp_path.glob('*.egg-info/requires.txt')
  assert f'imagerecords=={reader_version}' in requires.read_text().splitlines()
