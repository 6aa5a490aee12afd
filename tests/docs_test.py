"""The documentation matches the code: README.md, BUILD.md and docs/ name only flags, flag files
and paths that exist, and their quick commands (`--help`, `--helpfull`) run.

Commands are found in fenced shell blocks (one command per line, `\\` continuations joined) and
in inline code spans that start with a command, e.g. `evaluate.py --model=RUN/best`.
"""

import ast
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "BUILD.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAGFILES = ROOT / "glcic_tf" / "flagfiles"

COMMANDS = ("train", "export", "evaluate", "inpaint", "app", "convert_torch_weights")
BENCHMARKS = sorted(path.stem for path in (ROOT / "benchmarks").glob("*.py") if "DEFINE_" in path.read_text())


def command_module(token):
    """The Python module of a documented command (`train.py`, `glcic-train`,
    `benchmarks/run.py`, `python -m glcic_tf.commands.train`), or None."""
    token = token.strip("'\"")
    name = os.path.basename(token)
    if token.startswith("benchmarks/") and name.endswith(".py") and name[:-3] in BENCHMARKS:
        return f"benchmarks.{name[:-3]}"
    if name.endswith(".py") and name[:-3] in COMMANDS and "/" not in token.replace("./", ""):
        return f"glcic_tf.commands.{name[:-3]}"
    if name.startswith("glcic-") and name[6:].replace("-", "_") in COMMANDS:
        return f"glcic_tf.commands.{name[6:].replace('-', '_')}"
    if token.startswith("glcic_tf.commands.") and token.split(".")[-1] in COMMANDS:
        return token
    if token.startswith("benchmarks.") and token.split(".")[-1] in BENCHMARKS:  # python -m benchmarks.run
        return token
    return None


# The flags each command accepts, read in one fresh interpreter: each module is imported anew
# (its flags and those of the modules it imports are deleted first), so each sees only its own.
_FLAG_LISTER = r"""
import importlib, json, sys
from absl import app, flags, logging
FLAGS = flags.FLAGS
app.define_help_flags()  # --help, --helpfull, ...: what app.run, and so every command, defines
OURS = ("glcic_tf.commands", "benchmarks")
result = {}
for module in sys.argv[1:]:
    for owner, defined in list(FLAGS.flags_by_module_dict().items()):
        if owner.startswith(OURS):
            for flag in list(defined):
                if flag.name in FLAGS:
                    delattr(FLAGS, flag.name)
    for name in [name for name in sys.modules if name.startswith(("glcic_tf.commands.", "benchmarks"))]:
        del sys.modules[name]
    importlib.import_module(module)
    result[module] = {name: FLAGS[name].boolean for name in FLAGS}
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def command_flags():
    modules = [f"glcic_tf.commands.{name}" for name in COMMANDS] + [f"benchmarks.{name}" for name in BENCHMARKS]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _FLAG_LISTER, *modules], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fenced_blocks(text):
    """(language, body) of each fenced code block."""
    return re.findall(r"^ *```(\w*)[^\n]*\n(.*?)^ *```", text, flags=re.M | re.S)


def _shell_lines(text):
    """The command lines of a document: fenced shell blocks line by line (continuations joined)
    and inline code spans outside fenced blocks."""
    lines = []
    for language, body in _fenced_blocks(text):
        if language in SHELL:
            lines += body.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^ *```.*?^ *```", "", text, flags=re.M | re.S)
    lines += re.findall(r"`([^`\n]+)`", prose)
    return lines


SHELL = ("bash", "sh", "shell", "console", "")  # a block without a language is read as commands too


def _tokens(line):
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: a line of a multi-line string
        return line.split("#")[0].split()


def documented_commands(text):
    """(command module, [flags given to it]) for every command in the document's shell lines."""
    found = []
    for line in _shell_lines(text):
        current = None
        for token in _tokens(line):
            if token in ("|", "||", "&&", ";", "&") or token.startswith((">", "<", "|")):
                current = None
                continue
            module = command_module(token)
            if module:
                current = (module, [])
                found.append(current)
            elif current and token.startswith("--"):
                current[1].append(token.rstrip(").,;:"))
    return found


def _accepts(flags, flag):
    name = flag[2:].split("=", 1)[0]
    if name in flags or name in ("flagfile", "undefok"):  # absl's parser reads these two itself
        return True
    return name.startswith("no") and flags.get(name[2:]) is True  # --noflag of a boolean


def _documents():
    return [pytest.param(path, id=str(path.relative_to(ROOT))) for path in DOCUMENTS]


@pytest.mark.parametrize("document", _documents())
def test_every_flag_shown_after_a_command_exists_in_that_command(document, command_flags):
    unknown = []
    for module, given in documented_commands(document.read_text()):
        unknown += [f"{module} {flag}" for flag in given if not _accepts(command_flags[module], flag)]
    assert not unknown, f"{document.name} shows flags its commands lack: {unknown}"


_PATH = re.compile(r"(?<![\w/.~-])(?:\./)?((?:glcic_tf|tests|benchmarks|docs|\.ci)/[\w.*/-]*[\w*])")
# A file of the repository named alone (`quickstart.sh`, `setup.py`, `mkdocs.yml`); `*_test.py` is a pattern.
_FILE = re.compile(r"(?<![\w/.*-])(?:\./)?([\w-]+\.(?:py|sh|yml|yaml|toml|cfg|ini))\b")
# Files of other projects that the docs name: the authors' download script.
ELSEWHERE = {"download_model.sh"}


def documented_paths(text):
    """Repository paths named in code (spans, fenced blocks) and in links."""
    code = [body for _, body in _fenced_blocks(text)] + re.findall(r"`([^`\n]+)`", text) + re.findall(r"\]\(([^)\s#]+)", text)
    return sorted({match for chunk in code for match in _PATH.findall(chunk) if "<" not in match})


def documented_files(text):
    """Files named alone, without a folder, in code."""
    code = [body for _, body in _fenced_blocks(text)] + re.findall(r"`([^`\n]+)`", text)
    return sorted({match for chunk in code for match in _FILE.findall(chunk) if match not in ELSEWHERE})


def _in_repository(name):
    return any(".venv" not in path.parts for path in ROOT.rglob(name))


def documented_flagfiles(text):
    code = [body for _, body in _fenced_blocks(text)] + re.findall(r"`([^`\n]+)`", text)
    return sorted({match for chunk in code for match in re.findall(r"(?<![\w/.-])([\w-]+\.flags)\b", chunk)})


@pytest.mark.parametrize("document", _documents())
def test_every_path_and_flag_file_named_exists(document):
    text = document.read_text()
    base = document.parent
    missing = [path for path in documented_paths(text) if not glob.glob(str(ROOT / path)) and not glob.glob(str(base / path))]
    missing += [name for name in documented_flagfiles(text) if not (FLAGFILES / name).exists()]
    missing += [name for name in documented_files(text) if not _in_repository(name)]
    assert not missing, f"{document.name} names what does not exist: {missing}"


def _help_commands():
    commands = []
    for document in DOCUMENTS:
        for language, body in _fenced_blocks(document.read_text()):
            if language not in ("bash", "sh", "shell"):
                continue
            for line in body.replace("\\\n", " ").splitlines():
                tokens = _tokens(line)
                if any(token in ("--help", "--helpfull") for token in tokens) and any(command_module(t) for t in tokens):
                    commands.append(pytest.param(tokens, id=f"{document.name}: {' '.join(tokens)}"))
    return commands


@pytest.mark.slow
@pytest.mark.parametrize("tokens", _help_commands())
def test_every_documented_help_command_runs(tokens):
    """`python train.py --helpfull` and the like, as a person types them (the installed
    `glcic-*` scripts where they are on PATH, else `python -m` of the same module)."""
    start = next(index for index, token in enumerate(tokens) if command_module(token))
    module, rest = command_module(tokens[start]), tokens[start + 1 :]
    if tokens[start].startswith("glcic-") and shutil.which(tokens[start]):
        argv = [shutil.which(tokens[start]), *rest]
    elif tokens[start].endswith(".py"):
        argv = [sys.executable, tokens[start], *rest]
    else:
        argv = [sys.executable, "-m", module, *rest]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180)
    # absl prints the help on stdout and exits with status 1; anything else is a failure.
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr and "\nerror" not in "\n" + done.stderr, done.stderr[-2000:]
    assert "  --" in done.stdout and module.rsplit(".", 1)[-1] in done.stdout  # it listed the command's flags


def test_a_renamed_flag_or_a_missing_flag_file_is_found(command_flags):
    """The checks above can fail: a flag the command lacks, and paths that are not there."""
    text = "```bash\npython train.py --flagfile=demo.flags --model_dirr=/tmp/x | tee log\n```\nand `inpaint.py --image=a --boxes=1`"
    commands = documented_commands(text)
    assert [module for module, _ in commands] == ["glcic_tf.commands.train", "glcic_tf.commands.inpaint"]
    assert [flag for module, given in commands for flag in given if not _accepts(command_flags[module], flag)] == ["--model_dirr=/tmp/x", "--boxes=1"]
    assert _accepts(command_flags["glcic_tf.commands.inpaint"], "--nopostprocess")
    assert documented_paths("see `glcic_tf/no_such.py` and ![x](docs/images/nothing.png)") == ["docs/images/nothing.png", "glcic_tf/no_such.py"]
    assert documented_flagfiles("`--flagfile=places3.flags`") == ["places3.flags"]
    assert documented_files("run `quickstart.sh`, `nope.sh` and `./glcic_tf/x.py`, test `*_test.py`") == ["nope.sh", "quickstart.sh"]
    assert not _in_repository("nope.sh") and _in_repository("quickstart.sh")
    assert documented_paths("`./glcic_tf/nope.py`") == ["glcic_tf/nope.py"]
    assert command_module("benchmarks.run") == "benchmarks.run" and command_module("-m") is None


def test_ci_runs_the_test_command_that_readme_gives():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    (command,) = [line for _, body in _fenced_blocks(section)[:1] for line in body.splitlines() if line.strip()]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == command.split("#")[0].strip()


def test_readme_is_a_short_users_guide():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


# Flags of the other programs the docs show (tensorflow_model_server, saved_model_cli, pip,
# pytest, mkdocs, tensorboard, chromium): named in prose too, so listed here.
OTHER_PROGRAMS_FLAGS = {
    "port", "rest_api_port", "model_name", "model_base_path", "model_config_file", "file_system_poll_wait_seconds",  # tensorflow_model_server
    "dir", "all",  # saved_model_cli show
    "no-deps", "durations", "strict", "logdir", "no-sandbox",  # pip, pytest, mkdocs, tensorboard, chromium
    "prefix", "directory",  # npm ci, python -m http.server
}


@pytest.mark.parametrize("document", _documents())
def test_every_flag_named_anywhere_is_a_flag_of_ours_or_of_the_program_shown(document, command_flags):
    """A flag named in prose (`--max_queue`) belongs to some command, even where no command
    precedes it: a renamed flag leaves no page behind. `--free_form_*` names a family."""
    # The benchmarks' flags count only where the benchmarks are documented.
    programs = [m for m in command_flags if m.startswith("glcic_tf.") or document.name in ("performance.md", "BUILD.md")]
    ours = set().union(*(command_flags[m] for m in programs)) | {"flagfile", "undefok"}
    text = document.read_text()
    for line in sorted(_shell_lines(text), key=len, reverse=True):  # flags after a command: checked against it above
        if any(command_module(token) for token in _tokens(line)):
            text = text.replace(line, "")
    unknown = []
    for name, family in re.findall(r"(?<![\w-])--([a-z][\w-]*?)(_\*)?(?![\w-])", text):
        if family:
            known = any(flag.startswith(name + "_") for flag in ours)
        else:
            known = name in ours or name in OTHER_PROGRAMS_FLAGS or (name.startswith("no") and name[2:] in ours)
        if not known:
            unknown.append(f"--{name}{family}")
    assert not unknown, f"{document.name} names flags no command has: {sorted(set(unknown))}"


def _design_layers():
    """{module path prefix: layer number (0 = top)} from docs/design.md's table of layers."""
    layers, layer = {}, -1
    text = (ROOT / "docs" / "design.md").read_text().split("## The modules, by layer", 1)[1].split("\n## ", 1)[0]
    for row in re.findall(r"^\|([^|\n]*)\|\s*`(glcic_tf/[^`]+)`", text, flags=re.M):
        if row[0].strip():
            layer += 1
        layers[row[1].rstrip("/").removesuffix(".py").replace("/", ".")] = layer
    return layers


def _entry_of(module, layers):
    """The design table's entry a module belongs to (its file, or the folder it is in)."""
    found = [prefix for prefix in layers if module == prefix or module.startswith(prefix + ".")]
    return max(found, key=len) if found else None


def test_the_design_pages_layers_are_the_codes_every_module_imports_only_from_below():
    layers = _design_layers()
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts): path for path in (ROOT / "glcic_tf").rglob("*.py")}
    unplaced = sorted(name for name in modules if name != "glcic_tf.__init__" and _entry_of(name, layers) is None)
    assert not unplaced, f"modules the design page does not place: {unplaced}"
    upward = []
    for name, path in modules.items():
        entry = _entry_of(name, layers)
        if entry is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            imported = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("glcic_tf"):
                imported = [node.module] if node.module != "glcic_tf" else [f"glcic_tf.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names if alias.name.startswith("glcic_tf.")]
            for target in imported:
                other = _entry_of(target, layers)
                if other is not None and other != entry and layers[other] <= layers[entry]:
                    upward.append(f"{name} (layer {layers[entry]}) imports {target} (layer {layers[other]})")
    assert not upward, upward
