"""manifest.json keeps its promise to the readers of each format version (issue 25, item 4).

``tests/manifest_schema.json`` holds the manifest's schema
(``imagerecords.manifest_schema.schema()``: every dataclass of the manifest, its fields, their
types and defaults) as of the current ``FORMAT_VERSION``. A change to the manifest's
dataclasses fails here until it is one of:

* a new format version, for any change a reader of this version would misread (a key
  renamed, removed, retyped, given another default or meaning): ``FORMAT_VERSION`` + 1 in
  ``reader/imagerecords/contract.py``, ``ADDITIVE_CHANGES[<new version>] = ()``, the snapshot
  written again with ``PYTHONPATH=.:reader python tests/test_manifest_schema.py``, and the
  version's line in ``docs/output.md`` ("Format versions");
* an additive change: only new fields with a default, each listed as ``'Class.field'`` in
  ``contract.ADDITIVE_CHANGES[FORMAT_VERSION]``. A reader of this version without them ignores
  the new keys, and a reader with them takes the default from a manifest that lacks them, so
  the version stays (and the snapshot too, until the next version).

The other tests: what ``Manifest.from_json`` promises (older manifests parse with defaults,
unknown keys are ignored, a value of the wrong type is a ValueError naming its section and key,
a newer format version is refused) and that ``to_json`` gives back the JSON it parsed.
"""

import copy
import json
import pathlib
import re
import sys

from imagerecords import contract
from imagerecords import manifest_schema
import pytest

SNAPSHOT = pathlib.Path(__file__).resolve().parent / 'manifest_schema.json'
OUTPUT_DOC = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'output.md'


def schema_changes(snapshot: dict, live: dict, additive) -> list:
  """What keeps ``live`` (``manifest_schema.schema()``) from being ``snapshot`` plus the
  ``additive`` fields (``'Class.field'``): one line per problem, [] when there is none. A new
  dataclass is allowed where an additive field holds it."""
  problems, added = [], {}
  for cls, fields in snapshot.items():
    if cls not in live:
      problems.append(f'{cls}: gone (a field held it)')
      continue
    for name, kind in fields.items():
      if name not in live[cls]:
        problems.append(f'{cls}.{name}: gone (was {kind})')
      elif live[cls][name] != kind:
        problems.append(f'{cls}.{name}: was {kind}, is {live[cls][name]}')
  for cls, fields in live.items():
    if cls in snapshot:
      added.update({f'{cls}.{name}': kind for name, kind in fields.items()
                    if name not in snapshot[cls]})
  for key, kind in added.items():
    if ' = ' not in kind:
      problems.append(f'{key}: new without a default ({kind}): a manifest of this version '
                      'written before it lacks the key, so it is not additive')
    elif key not in additive:
      problems.append(f'{key}: new ({kind}), and not listed as additive')
  problems.extend(f'{key}: listed as additive, but no new field of the snapshot\'s dataclasses'
                  for key in additive if key not in added)
  for cls in sorted(set(live) - set(snapshot)):
    if not any(re.search(rf'\b{cls}\b', kind) for kind in added.values()):
      problems.append(f'{cls}: a new dataclass that no new additive field holds')
  return problems


def _snapshot() -> dict:
  return json.loads(SNAPSHOT.read_text())


def test_the_schema_is_the_snapshot_of_its_format_version_plus_additive_fields():
  snapshot = _snapshot()
  assert snapshot['format_version'] == contract.FORMAT_VERSION, (
      f'FORMAT_VERSION is {contract.FORMAT_VERSION}, {SNAPSHOT.name} holds version '
      f'{snapshot["format_version"]}\'s schema: write the new version\'s '
      '(PYTHONPATH=.:reader python tests/test_manifest_schema.py)')
  additive = contract.ADDITIVE_CHANGES.get(contract.FORMAT_VERSION, ())
  problems = schema_changes(snapshot['schema'], manifest_schema.schema(), additive)
  assert not problems, (
      f'manifest.json changed since format version {contract.FORMAT_VERSION}:\n  '
      + '\n  '.join(problems)
      + '\nEither raise FORMAT_VERSION (reader/imagerecords/contract.py), write the snapshot '
      'again (PYTHONPATH=.:reader python tests/test_manifest_schema.py) and add the version to '
      'docs/output.md ("Format versions"); or, if the change is only new fields with a default '
      "(older readers ignore them), list each as 'Class.field' in "
      f'contract.ADDITIVE_CHANGES[{contract.FORMAT_VERSION}].')


@pytest.mark.parametrize('change, problem', [
    (lambda s: s['DiffSection'].update(moved='int = 0'), 'DiffSection.moved: new'),
    (lambda s: s['DiffSection'].update(moved='int'), 'DiffSection.moved: new without a default'),
    (lambda s: s['DiffSection'].pop('renamed'), 'DiffSection.renamed: gone'),
    (lambda s: s['ShardEntry'].update(bytes='int = 0'), 'ShardEntry.bytes: was'),
    (lambda s: s.update(Extra={'a': 'int'}), 'Extra: a new dataclass'),
])
def test_a_change_that_is_not_additive_is_named(change, problem):
  live = copy.deepcopy(_snapshot()['schema'])
  change(live)
  assert any(line.startswith(problem) for line in schema_changes(_snapshot()['schema'], live,
                                                                 ())), problem


def test_new_fields_with_a_default_pass_once_listed_as_additive():
  snapshot = _snapshot()['schema']
  live = copy.deepcopy(snapshot)
  live['DiffSection']['moved'] = 'int = 0'
  live['Manifest']['extra'] = 'Optional[Extra] = null'
  live['Extra'] = {'a': 'int'}
  assert schema_changes(snapshot, live, ('DiffSection.moved', 'Manifest.extra')) == []
  assert schema_changes(snapshot, snapshot, ('DiffSection.moved',)) == [
      "DiffSection.moved: listed as additive, but no new field of the snapshot's dataclasses"]


def test_the_format_versions_are_documented():
  """docs/output.md's table of format versions has a row for each, up to the current one."""
  rows = re.findall(r'^\| (\d+) \|', OUTPUT_DOC.read_text(), re.M)
  assert [int(row) for row in rows] == list(range(1, contract.FORMAT_VERSION + 1))


# --- Manifest.from_json ------------------------------------------------------------------------

_SHARD = {'file': 'train-00000-of-00001.tfrecord', 'num_examples': 2, 'bytes': 2048,
          'sha256': 'a' * 64}
_GROUP = {'kind': 'near', 'files': [{'file': 'a/1.jpg', 'split': 'train', 'label': 'a'},
                                    {'file': 'b/1.jpg', 'split': 'validation', 'label': 'b'}],
          'leaks_across_splits': True, 'label_conflict': True, 'similarity': 0.97,
          'hash_distance': 3}
FULL = {  # every section, in the order the job writes the keys
    'format_version': contract.FORMAT_VERSION,
    'tool': {'name': 'imagerecords', 'version': '0.1.0'},
    'status': 'complete', 'error': None, 'created_utc': '2026-12-07T10:00:00+00:00',
    'input_dir': '/in', 'output_dir': '/out/dt=2026-12-07',
    'options': {'image_size': 64, 'stats': 'true', 'label_map': None, 'verbose': False,
                'max_failure_fraction': 0.05},
    'image': {'format': 'jpeg', 'channels': 3, 'image_size': 64, 'resize_mode': 'pad',
              'mask': {'format': 'png', 'void': 255, 'layout': 'voc'}},
    'embedding': {'model': 'm.keras', 'weights': None, 'fingerprint': 'b' * 64,
                  'pooling': 'none', 'shape': [2, 2, 8], 'dtype': 'float32', 'input_size': 32,
                  'preprocessing': 'auto', 'feature': 'image/embedding',
                  'shape_feature': 'image/embedding/shape'},
    'split_source': 'hash', 'task': 'segmentation', 'classes': ['a', 'b'],
    'splits': {'train': {'num_examples': 2, 'num_shards': 1, 'compressed': False,
                         'class_counts': {'a': 1, 'b': 1}, 'fingerprint': 'c' * 64,
                         'bytes': 2048, 'shards': [_SHARD]}},
    'num_inputs': 3, 'num_examples': 2, 'num_failures': 1, 'num_skipped': 0,
    'failures_by_stage': {'decode': 1},
    'duplicates': {'exact': {'num_groups': 0, 'num_files': 0, 'num_dropped': 0,
                             'num_leaking_groups': 0, 'num_label_conflicts': 0},
                   'near': {'num_groups': 1, 'num_files': 2, 'num_dropped': 0,
                            'num_leaking_groups': 1, 'num_label_conflicts': 1},
                   'file': 'duplicates.jsonl', 'examples': [_GROUP]},
    'quality': {'num_measured': 2, 'num_flagged': 1, 'file': 'quality.jsonl',
                'flags': {'dark': 1, 'small': 0}},
    'run_date': '2026-12-07',
    'diff': {'previous_run': '/out/dt=2026-12-06', 'added': 1, 'removed': 0, 'changed': 0,
             'unchanged': 1, 'moved_split': 0, 'relabeled': 0, 'renamed': 0,
             'by_class': {'b': {'added': 1}}},
    'incremental': {'previous_run': '/out/dt=2026-12-06', 'reused_from': '/out/dt=2026-12-06',
                    'full_rebuild_reason': None,
                    'settings': {'image_size': 64, 'embedding': {'model': 'm.keras'},
                                 'format_version': contract.FORMAT_VERSION},
                    'reused': 1, 'converted': 1, 'reconverted': 0,
                    'rejected': [{'file': None, 'shard': '/out/dt=2026-12-06/x.tfrecord',
                                  'record': 3, 'offset': 1200, 'reason': 'a bad CRC'}]},
    'statistics': {'split': 'train', 'num_examples': 2, 'num_pixels': 8192,
                   'pixel_mean': [120.5, 110.25, 100.0], 'pixel_std': [60.0, 61.5, 62.0],
                   'transform_fn': None, 'class_frequencies': {'a': 1, 'b': 1}},
    'timings': {'wall_time_s': 4.5},
    'metrics': {'images_converted': 1},
    'step_msecs': {'convert images': 12},
}
# A manifest of the first version (2026-11-21): no task, sections or per-shard digests yet.
FIRST_VERSION = {
    'format_version': 1, 'tool': {'name': 'imagerecords', 'version': '0.1.0'},
    'status': 'complete', 'error': None, 'created_utc': '2026-11-21T10:00:00+00:00',
    'input_dir': '/in', 'output_dir': '/out', 'options': {'image_size': 256},
    'image': {'format': 'jpeg', 'channels': 3, 'image_size': 256, 'resize_mode': 'shorter_side'},
    'split_source': 'folders', 'classes': ['ants', 'bees'],
    'splits': {'train': {'num_examples': 2, 'num_shards': 1, 'compressed': False,
                         'class_counts': {'ants': 1, 'bees': 1}, 'fingerprint': 'c' * 64,
                         'shards': [{'file': 'train-00000-of-00001.tfrecord',
                                     'num_examples': 2, 'bytes': 2048}]}},
    'num_inputs': 2, 'num_examples': 2, 'num_failures': 0, 'num_skipped': 0,
    'failures_by_stage': {}, 'timings': {'wall_time_s': 3.2},
}


def test_to_json_gives_back_the_json_it_parsed_key_for_key():
  text = json.dumps(FULL, indent=2)
  parsed = manifest_schema.Manifest.from_json(json.loads(text))
  assert json.dumps(parsed.to_json(), indent=2) == text


def test_a_first_version_manifest_parses_with_the_defaults_of_what_it_lacks():
  manifest = manifest_schema.Manifest.from_json(FIRST_VERSION)
  assert manifest.task == contract.TASK_CLASSIFICATION and manifest.embedding is None
  assert manifest.splits['train'].shards[0].sha256 is None
  assert manifest.splits['train'].bytes == 0
  assert manifest.statistics is manifest.duplicates is manifest.incremental is None


def test_sections_of_older_shapes_keep_what_this_version_knows():
  """Sections of early versions: a flat ``duplicates`` (its counts of one kind then, and
  ``groups``), a ``diff`` before ``renamed``, an ``incremental`` before its verification."""
  manifest = manifest_schema.Manifest.from_json({
      **FIRST_VERSION,
      'duplicates': {'num_groups': 1, 'num_files': 2, 'num_dropped': 0, 'groups': []},
      'diff': {'previous_run': '/out', 'added': 2, 'removed': 0, 'changed': 0, 'unchanged': 4,
               'moved_split': 0, 'relabeled': 0, 'by_class': {'ants': {'added': 2}}},
      'incremental': {'previous_run': '/out', 'reused_from': '/out',
                      'full_rebuild_reason': None, 'reused': 4, 'converted': 2}})
  assert manifest.duplicates == manifest_schema.DuplicatesSection()
  assert manifest.diff.renamed == 0 and manifest.diff.added == 2
  assert manifest.incremental.settings is None and manifest.incremental.rejected == []


def test_keys_this_version_does_not_know_are_ignored():
  data = copy.deepcopy(FULL)
  data['lineage'] = {'parent': 'x'}
  data['statistics']['pixel_median'] = [1, 2, 3]
  data['splits']['train']['shards'][0]['crc32c'] = 'abc'
  assert manifest_schema.Manifest.from_json(data) == manifest_schema.Manifest.from_json(FULL)


@pytest.mark.parametrize('change, message', [
    (lambda m: m['statistics']['pixel_mean'].__setitem__(1, 'x'),
     'statistics.pixel_mean[1] is a string ("x"), not a number'),
    (lambda m: m['statistics'].update(pixel_std=7),
     'statistics.pixel_std is a number (7), not an array or null'),
    (lambda m: m['duplicates']['near'].update(num_groups=1.5),
     'duplicates.near.num_groups is a number (1.5), not an integer'),
    (lambda m: m['duplicates']['examples'][0].update(label_conflict='yes'),
     'duplicates.examples[0].label_conflict is a string ("yes"), not a boolean'),
    (lambda m: m['incremental']['rejected'][0].pop('reason'),
     'incremental.rejected[0] has no "reason"'),
    (lambda m: m['diff']['by_class']['b'].update(added=None),
     "diff.by_class['b']['added'] is null, not an integer"),
    (lambda m: m['embedding'].pop('shape'), 'embedding has no "shape"'),
    (lambda m: m['image'].update(mask=[]), 'image.mask is an array, not an object or null'),
    (lambda m: m['options'].update(image_size=[64]),
     "options['image_size'] is an array, not a boolean, an integer, a number, a string or null"),
    (lambda m: m.update(quality='none'), 'quality is a string ("none"), not an object or null'),
    (lambda m: m['timings'].update(wall_time_s=True),
     'timings.wall_time_s is a boolean (true), not a number'),
    (lambda m: m.pop('tool'), 'the manifest has no "tool"'),
    (lambda m: m['metrics'].update(images_converted='1'),
     "metrics['images_converted'] is a string (\"1\"), not an integer"),
])
def test_a_value_of_another_type_is_a_value_error_naming_section_and_key(change, message):
  data = copy.deepcopy(FULL)
  change(data)
  with pytest.raises(ValueError, match=re.escape(f'manifest.json: {message}')):
    manifest_schema.Manifest.from_json(data)


def test_older_format_versions_are_read_and_newer_ones_refused():
  for version in range(1, contract.FORMAT_VERSION + 1):
    parsed = manifest_schema.Manifest.from_json({**FULL, 'format_version': version})
    assert parsed.format_version == version
  newer = contract.FORMAT_VERSION + 1
  with pytest.raises(manifest_schema.FormatVersionError,
                     match=f'format_version {newer} is newer than this imagerecords reads '
                     f'\\(1 to {contract.FORMAT_VERSION}\\).*upgrade the imagerecords package'):
    manifest_schema.Manifest.from_json({**FULL, 'format_version': newer, 'splits': 'another shape'})
  with pytest.raises(manifest_schema.FormatVersionError, match='format_version 0 is no version'):
    manifest_schema.Manifest.from_json({**FULL, 'format_version': 0})
  with pytest.raises(ValueError, match='format_version is a string'):
    manifest_schema.Manifest.from_json({**FULL, 'format_version': '2'})


def main(argv) -> int:
  """Writes ``tests/manifest_schema.json``: the schema of the current ``FORMAT_VERSION``. It
  refuses to replace the snapshot of the same version (a change of the schema within one
  version is what the test above catches) unless ``--same-version`` says the version is new
  and not yet released."""
  if SNAPSHOT.exists() and _snapshot()['format_version'] == contract.FORMAT_VERSION and (
      '--same-version' not in argv):
    print(f'{SNAPSHOT} holds format version {contract.FORMAT_VERSION} already: raise '
          'FORMAT_VERSION first (or pass --same-version for a version not yet released)',
          file=sys.stderr)
    return 1
  SNAPSHOT.write_text(json.dumps({'format_version': contract.FORMAT_VERSION,
                                  'schema': manifest_schema.schema()}, indent=1) + '\n')
  print(f'wrote {SNAPSHOT} (format version {contract.FORMAT_VERSION})')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
