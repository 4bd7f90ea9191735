"""The docs say what the code does: every ``chemtune ...`` command they show parses with the CLI's own parser,
every relative link (and its ``#anchor``) resolves, and the README stays one screen.

Commands are read from shell code blocks (lines, ``&&`` chains, backslash continuations) and from inline code
spans that are a whole command (``chemtune list spaces``; usage forms with ``[...]`` or ``a|b`` are skipped).
They are parsed, never run.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from studies.cli import build_parser
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "cluster" / "README.md"]
SHELLS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`(chemtune [^`]+)`(?!`)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SUBST = re.compile(r"\$\((chemtune [^)]*)\)")
REDIRECT = re.compile(r"\d?[<>]{1,2}(&\d)?")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
USAGE = re.compile(r"[\[\]|…]|\.\.\.")  # placeholders of a usage line, not a command


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _words(segment: list[str]) -> list[str]:
    """A simple command's words: without ``VAR=value`` prefixes and redirections (``> file``, ``2>&1``)."""
    while segment and ENV.match(segment[0]):
        segment = segment[1:]
    words, skip = [], False
    for token in segment:
        if skip:
            skip = False
        elif REDIRECT.match(token):
            skip = REDIRECT.fullmatch(token) is not None  # a bare `>`: its target is the next token
        else:
            words.append(token)
    return words


def _chemtune_commands(text: str) -> list[list[str]]:
    """The argument lists of the ``chemtune`` commands in ``text``'s shell code blocks and inline code."""
    commands = []
    for info, body in FENCE.findall(text):
        if (info.split() or [""])[0] not in SHELLS:  # `bash walkthrough` is bash; yaml comments are not commands
            continue
        lines = body.replace("\\\n", " ").splitlines()
        lines += [inner for line in lines for inner in SUBST.findall(line)]  # JOB=$(chemtune submit ...)
        for line in lines:
            try:
                tokens = shlex.split(SUBST.sub("X", line).strip().removeprefix("$ "), comments=True)
            except ValueError:  # an unbalanced quote: not a command line
                continue
            segment: list[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", "||", ";", "|"):
                    words = _words(segment)
                    if words[:1] == ["chemtune"]:
                        commands.append(words[1:])
                    segment = []
                else:
                    segment.append(token)
    prose = FENCE.sub("", text)
    # Inline: whole commands only (`chemtune list spaces`), not a verb named in a sentence (`chemtune compare`).
    spans = [shlex.split(span)[1:] for span in INLINE.findall(prose) if not USAGE.search(span)]
    commands += [argv for argv in spans if len(argv) >= 2 and not argv[0].startswith("-")]
    return commands


def _commands() -> list[tuple[str, list[str]]]:
    return [(_rel(doc), argv) for doc in DOCS for argv in _chemtune_commands(doc.read_text())]


COMMANDS = _commands()


def test_the_docs_show_commands() -> None:
    # The extractor finds what the README shows; an empty list would make the parse test vacuous.
    readme = {" ".join(argv) for doc, argv in COMMANDS if doc == "README.md"}
    assert {"launch studies/quickstart.yaml", "leaderboard quickstart",
            "register quickstart --model-name logp --alias champion"} <= readme
    assert len({doc for doc, _ in COMMANDS}) >= 4


@pytest.mark.parametrize(("doc", "argv"), COMMANDS, ids=[f"{d}: chemtune {' '.join(a)}" for d, a in COMMANDS])
def test_command_parses(doc: str, argv: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{doc}: `chemtune {' '.join(argv)}` does not parse: {err.getvalue().strip()}")
    study = getattr(args, "study", None)
    if isinstance(study, Path) and study.parts[:1] == ("studies",):  # a shipped example: it must exist
        assert (ROOT / study).is_file(), f"{doc}: `chemtune {' '.join(argv)}`: no file {study}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def _links() -> list[tuple[str, str]]:
    return [(_rel(doc), target) for doc in DOCS for target in LINK.findall(FENCE.sub("", doc.read_text()))
            if not re.match(r"[a-z]+:", target)]


LINKS = _links()


@pytest.mark.parametrize(("doc", "target"), LINKS, ids=[f"{d} -> {t}" for d, t in LINKS])
def test_relative_link_resolves(doc: str, target: str) -> None:
    file, _, anchor = target.partition("#")
    path = (ROOT / doc).parent / file if file else ROOT / doc
    assert path.exists(), f"{doc}: link {target!r}: no such file {_rel(path.resolve())}"
    if anchor and path.suffix == ".md":
        assert anchor in _anchors(path), f"{doc}: link {target!r}: no heading #{anchor} in {file or doc}"


def test_links_were_found() -> None:
    assert ("README.md", "docs/contributing.md") in LINKS


def test_readme_is_one_screen_with_the_test_command_marked() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150, "README.md grew past one screen: move reference text to docs/"
    lines = text.splitlines()
    marker = lines.index("<!-- test-command -->")
    assert lines[marker + 1].startswith("```")
    command = lines[marker + 2].strip()
    # CI calls exactly the README's test command, and that command runs the linter and pytest.
    ci = [ln.strip() for ln in (README.parent / ".ci" / "run").read_text().splitlines() if not ln.startswith("#")]
    assert any(ln.startswith(command) for ln in ci), f".ci/run does not call the README's test command {command!r}"
    script = (README.parent / next(w for w in command.split() if w.endswith(".sh"))).read_text()
    assert "python -m pytest" in script and "ruff check" in script



def test_cli_reference_lists_every_command() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]  # argparse's subcommands action
    table = re.findall(r"^\| `chemtune (\w+)", (ROOT / "docs" / "cli.md").read_text(), re.M)
    table += re.findall(r"/ `chemtune (\w+)", (ROOT / "docs" / "cli.md").read_text())  # `status ...` / `logs ...`
    assert set(sub.choices) == set(table)
