"""The house's shape: what the top level holds, the package's layers (each module imports only from its own layer
or those below it, so there are no import cycles), and the shared constants defined in config.py alone."""
import ast
import pathlib
import re
import subprocess

from tests.helpers import ROOT

PACKAGE = pathlib.Path(ROOT) / 'roadseg'
TOP_LEVEL = {'main.py', 'helper.py', 'project_tests.py', 'README.md', 'DEVELOPERS.md', 'requirements.txt', 'data',
             'runs', 'docs', 'tests', 'roadseg', '.ci', '.gitignore'}
# Lowest first, as roadseg/__init__.py draws them.
LAYERS = (('roadseg.config', 'roadseg.errors', 'roadseg.atomic', 'roadseg.process'), ('roadseg.data',),
          ('roadseg.model', 'roadseg.vgg_builder'), ('roadseg.serving',), ('roadseg.evaluation',),
          ('roadseg.training',), ('roadseg.commands', 'roadseg.cli'))
SHARED_CONSTANTS = ('VGG_TAG', 'VGG_TENSOR_NAMES', 'OUTPUT_MULTIPLE', 'AT_ONCE_SKIP_SCALES', 'ADAM_EPSILON',
                    'ONNX_OPSET', 'RUN_CONFIG_FILE', 'DEFAULT_VAL_DRIVE', 'DEFAULT_VAL_CITIES', 'CLASSIC_ZOOM',
                    'CLASSIC_COLOR_JITTER')


def layer_of(module):
    for depth, members in enumerate(LAYERS):
        if any(module == member or module.startswith(member + '.') for member in members):
            return depth
    raise AssertionError('%s belongs to no layer of LAYERS: add it there and to roadseg/__init__.py' % module)


def package_modules():
    for path in sorted(PACKAGE.rglob('*.py')):
        yield '.'.join(path.relative_to(ROOT).with_suffix('').parts).replace('.__init__', ''), path


def imported_modules(path):
    """The roadseg modules a file imports, at any depth of its code (`from roadseg.data import splits` names
    roadseg.data.splits)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('roadseg'):
            for alias in node.names:
                child = '%s.%s' % (node.module, alias.name)
                yield child if (PACKAGE.parent / (child.replace('.', '/') + '.py')).exists() else node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith('roadseg'))


def test_the_top_level_holds_only_the_classic_files_the_package_and_its_folders():
    tracked = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an exported copy): what is on disk, without caches
        tracked = [entry.name for entry in pathlib.Path(ROOT).iterdir() if not entry.name.startswith(('.', '__'))]
    extra = {path.split('/')[0] for path in tracked} - TOP_LEVEL
    assert not extra, 'unexpected at the top level: %s (move them into roadseg/, tests/ or docs/)' % sorted(extra)


def test_every_module_imports_only_from_its_layer_or_below():
    upward = ['%s imports %s' % (module, target) for module, path in package_modules()
              for target in imported_modules(path) if layer_of(target) > layer_of(module)]
    assert not upward, upward


def test_the_layers_are_the_ones_the_package_docstring_draws():
    drawn = (PACKAGE / '__init__.py').read_text()
    for members in LAYERS:
        for member in members:
            name = member.split('.', 1)[1]
            assert re.search(r'\b%s\b' % re.escape(name), drawn), '%s is missing from roadseg/__init__.py' % name


def test_each_shared_constant_is_defined_once_in_config():
    definitions = {name: [] for name in SHARED_CONSTANTS}
    for path in [*PACKAGE.rglob('*.py'), *pathlib.Path(ROOT).glob('*.py')]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in definitions:
                        definitions[target.id].append(str(path.relative_to(ROOT)))
    assert definitions == {name: ['roadseg/config.py'] for name in SHARED_CONSTANTS}, definitions
