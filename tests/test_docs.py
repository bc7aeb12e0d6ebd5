"""Docs that can fail: the links, the file paths and the command-line flags that README.md, DEVELOPERS.md and
docs/*.md show must exist.

What is checked, and the rules that decide it:

- Links: every relative markdown link `[text](target)` and image `![alt](target)` outside code must point to an
  existing file or folder, relative to the page that holds it (the `#anchor` is stripped for that check; http(s),
  mailto and other `scheme:` links are not followed). A link's `#anchor` must also name a heading of its page
  (GitHub's slugs: lower case, punctuation dropped, spaces to hyphens).
- Paths: every token of inline code (`...`) and of code blocks (fenced, or indented by four spaces) that is a
  path of the repository must exist. A token is such a path when it starts with `roadseg/`, `tests/`, `docs/` or
  `.ci/`, or when it has no `/` and ends in `.py`, `.md` or `.txt` (the top-level files: `main.py`,
  `requirements.txt`, ...); such paths are relative to the project root, where the commands run, whichever page
  names them. `python -m roadseg.x.y` must name an existing module file. Skipped: tokens with
  placeholders or wildcards (`<`, `>`, `*`, `{`, `$`, `~`), and everything else, in particular paths under
  `data/` and `runs/` (filled by downloads and runs, not tracked) and bare `.png`/`.json` names (a run's
  outputs, a user's inputs). So a foreign file name (another project's `labels.py`) is written without
  backticks, or with its own folder.
- Flags: every `--flag` (and `-h`) on a `python main.py <command> ...` line of README.md and docs/*.md (in inline
  code or a code block; `#` comments and a command table's description column, after three or more spaces, are
  not part of it) must be an option of that command. No command (`python main.py --epochs 5`) means `train`;
  `[train]` counts as `train`; a placeholder command (`<command>`) must have the flag in every command.
"""
import contextlib
import functools
import io
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs')
COMMANDS = ('train', 'demo', 'finish', 'evaluate', 'infer', 'export', 'bench', 'submit', 'plot')
README_LIMIT, DEVELOPERS_LIMIT = 15000, 8000  # bytes: README under 15 KB; DEVELOPERS.md (one line per module) under 8 KB

FENCE = re.compile(r'^ {0,3}(```|~~~)')
LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
INLINE_CODE = re.compile(r'(`+)(.+?)\1')
SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')
CHECKED_PREFIXES = ('roadseg/', 'tests/', 'docs/', '.ci/')
TOP_LEVEL_SUFFIXES = ('.py', '.md', '.txt')
PLACEHOLDER_CHARS = set('<>*{}$~')
FLAG = re.compile(r'^-{1,2}[A-Za-z][\w-]*$')


def pages():
    """README.md, DEVELOPERS.md and every docs/*.md, as paths relative to the project root."""
    found = ['README.md', 'DEVELOPERS.md']
    found += sorted(os.path.join('docs', name) for name in os.listdir(DOCS) if name.endswith('.md'))
    return found


@functools.lru_cache(maxsize=None)
def split_page(page):
    """(prose lines, code lines) of a markdown page. Code: fenced blocks, and lines indented by four spaces that
    follow a blank line or another such line (outside lists' continuation lines, which follow text)."""
    with open(os.path.join(ROOT, page), encoding='utf-8') as f:
        lines = f.read().splitlines()
    prose, code = [], []
    fenced, indented, previous_blank = False, False, True
    for line in lines:
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            code.append(line)
            continue
        if line.startswith('    ') and (previous_blank or indented) and not line.lstrip().startswith(('-', '|')):
            indented = True
            code.append(line)
        else:
            indented = False if line.strip() else indented
            prose.append(line)
        previous_blank = not line.strip()
    return prose, code


def inline_code(page):
    prose, _ = split_page(page)
    return [match.group(2).strip() for line in prose for match in INLINE_CODE.finditer(line)]


def code_snippets(page):
    """Inline code spans and code-block lines (continuation backslashes joined) of a page."""
    _, code = split_page(page)
    joined, pending = [], ''
    for line in code:
        if line.rstrip().endswith('\\'):
            pending += line.rstrip()[:-1] + ' '
            continue
        joined.append(pending + line)
        pending = ''
    if pending:
        joined.append(pending)
    return inline_code(page) + joined


def links(page):
    """The link targets of a page's prose (inline code removed first: `[x](y)` in code is not a link)."""
    prose, _ = split_page(page)
    return [match.group(1) for line in prose for match in LINK.finditer(INLINE_CODE.sub('', line))]


def slug(heading):
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r'[`*_]|\[|\]\([^)]*\)', '', heading.strip().lstrip('#').strip()).lower()
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


@functools.lru_cache(maxsize=None)
def anchors(page):
    prose, _ = split_page(page)
    seen, result = {}, set()
    for line in prose:
        if re.match(r'^#{1,6} ', line):
            name = slug(line)
            result.add(name if name not in seen else '%s-%d' % (name, seen[name]))
            seen[name] = seen.get(name, 0) + 1
    return result


def test_the_pages_are_found():
    assert 'README.md' in pages() and len(pages()) >= 4
    assert any('docs/overlay.png' in target for target in links('README.md'))


def test_every_relative_link_points_to_an_existing_file():
    broken = []
    for page in pages():
        for target in links(page):
            if SCHEME.match(target) or target.startswith('#'):
                continue
            path = target.split('#', 1)[0]
            full = os.path.normpath(os.path.join(ROOT, path.lstrip('/')) if path.startswith('/')
                                    else os.path.join(ROOT, os.path.dirname(page), path))
            if not os.path.exists(full):
                broken.append('%s: (%s)' % (page, target))
    assert not broken, 'links to files that do not exist:\n' + '\n'.join(broken)


def test_every_link_anchor_names_a_heading():
    broken = []
    for page in pages():
        for target in links(page):
            if SCHEME.match(target) or '#' not in target:
                continue
            path, anchor = target.split('#', 1)
            linked = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if linked.endswith('.md') and os.path.exists(os.path.join(ROOT, linked)) and anchor not in anchors(linked):
                broken.append('%s: (%s): no heading #%s in %s' % (page, target, anchor, linked))
    assert not broken, '\n'.join(broken)


def repository_paths(snippet):
    """The tokens of a code snippet that name files of the repository (the rule in the module docstring)."""
    tokens = snippet.split()
    for index, raw in enumerate(tokens):
        token = raw.strip('()[]\'",;:')
        token = token.rstrip('.') if not token.endswith(('/.', '..')) else token
        if not token or PLACEHOLDER_CHARS & set(token):
            continue
        if index > 0 and tokens[index - 1] == '-m' and token.startswith('roadseg'):
            module = token.replace('.', '/')
            yield token, (module + '.py', os.path.join(module, '__init__.py'))
        elif token.startswith(CHECKED_PREFIXES) or ('/' not in token and token.endswith(TOP_LEVEL_SUFFIXES)
                                                    and not token.startswith('.')):
            yield token, (token,)


def test_every_repository_path_named_exists():
    missing = []
    for page in pages():
        for snippet in code_snippets(page):
            for token, candidates in repository_paths(snippet):
                if not any(os.path.exists(os.path.join(ROOT, candidate)) for candidate in candidates):
                    missing.append('%s: %s' % (page, token))
    assert not missing, 'paths named in the docs that do not exist:\n' + '\n'.join(sorted(set(missing)))


def main_py_lines(page):
    """(command, flags) of every `python main.py ...` line shown in a page's code."""
    shown = []
    for snippet in code_snippets(page):
        for match in re.finditer(r'python main\.py\b(.*)', snippet):
            rest = re.split(r'\s#|\s{3,}|&&|\|\||;', match.group(1))[0]
            tokens = [token.strip('[]()\'",') for token in rest.split()]
            first = tokens[0] if tokens else ''
            if first in COMMANDS:
                command, tokens = first, tokens[1:]
            elif '<' in first:
                command, tokens = None, tokens[1:]
            elif not first or first.startswith('-') or first == 'flags':
                command = 'train'
            else:
                raise AssertionError('%s: `python main.py%s` names no command' % (page, match.group(1)))
            flags = [part for token in tokens for part in re.split(r'[=|]', token)[:1] if FLAG.match(part)]
            shown.append((command, flags, 'python main.py' + match.group(1)))
    return shown


@functools.lru_cache(maxsize=None)
def accepted_flags(command):
    """The option strings of `python main.py <command>`, read from what `python main.py <command> --help` prints.

    Why the help text: it is public API (argparse's format_help, through the same roadseg.cli.run that main.py
    calls, bench's own parser included), it lists every spelling of every option (`--augment, --no-augment`),
    and it needs no value for each flag nor the command's required arguments, which a trial parse would (a
    trial `parse_args([command, flag])` fails for `evaluate` without `--model` whatever the flag). Only the
    options section's invocation column is read: its lines start with two spaces and a dash, while help texts
    that mention other flags are indented further.
    """
    from roadseg import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli.run([command, '--help'])
    assert exit_.value.code in (0, None), 'python main.py %s --help failed' % command
    flags = set()
    for line in out.getvalue().splitlines():
        if re.match(r'^  -', line):
            invocation = re.split(r'\s{2,}', line.strip())[0]
            flags.update(token.rstrip(',') for token in invocation.split() if FLAG.match(token.rstrip(',')))
    assert '--help' in flags, 'no options read from python main.py %s --help' % command
    return frozenset(flags)


def test_the_help_text_is_read():
    assert {'--epochs', '--no-augment', '--resume', '--verbose'} <= accepted_flags('train')
    assert {'--model', '--json', '--split'} <= accepted_flags('evaluate')
    assert '--epochs' not in accepted_flags('evaluate')


def test_every_flag_shown_for_a_command_is_accepted():
    shown = [line for page in ['README.md'] + [p for p in pages() if p.startswith('docs')]
             for line in main_py_lines(page)]
    assert len([line for line in main_py_lines('README.md') if line[1]]) >= 5, 'README shows too few commands'
    refused = []
    for command, flags, line in shown:
        for flag in flags:
            for name in ([command] if command else COMMANDS):
                if flag not in accepted_flags(name):
                    refused.append('%s: %s is not an option of %s' % (line.strip(), flag, name))
    assert not refused, '\n'.join(refused)


def test_readme_and_developers_stay_short():
    assert os.path.getsize(os.path.join(ROOT, 'README.md')) < README_LIMIT
    assert os.path.getsize(os.path.join(ROOT, 'DEVELOPERS.md')) < DEVELOPERS_LIMIT


def test_every_package_module_has_its_line_in_the_layout():
    with open(os.path.join(ROOT, 'DEVELOPERS.md'), encoding='utf-8') as f:
        developers = f.read()
    modules = sorted(os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, '/')
                     for folder, _, names in os.walk(os.path.join(ROOT, 'roadseg'))
                     for name in names if name.endswith('.py') and name != '__init__.py')
    assert modules
    unlisted = [module for module in modules if '`%s`' % module not in developers]
    assert not unlisted, 'modules without a line in DEVELOPERS.md\'s layout: %s' % ', '.join(unlisted)
