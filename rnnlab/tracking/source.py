"""Where a run came from: MLflow's standard source tags, git, rnnlab's version, the command.

MLflow's UI fills its *Source* and *User* columns from ``mlflow.source.*`` and
``mlflow.user``; the git tags of the working directory's repository (where a user keeps
configs and cells) trace a result back to its code weeks later. rnnlab's own version (and
commit, when it runs from a checkout) is recorded separately: the two repositories differ.
"""

from __future__ import annotations

import getpass
import shlex
import subprocess
import sys
from pathlib import Path

import rnnlab

#: MLflow's standard tag keys (mlflow.utils.mlflow_tags), spelled out so that importing
#: this module costs no MLflow import
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
USER = "mlflow.user"
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_REPO_URL = "mlflow.source.git.repoURL"
GIT_DIRTY = "mlflow.source.git.dirty"
NOTE = "mlflow.note.content"


def git(folder: Path, *args: str) -> str | None:
    """``git -C folder ARGS``'s output, or None where git or a repository is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_tags(folder: Path) -> dict[str, str]:
    """Commit, branch, remote URL and dirtiness of the repository holding ``folder``."""
    commit = git(folder, "rev-parse", "HEAD")
    if not commit:
        return {}
    tags = {GIT_COMMIT: commit}
    branch = git(folder, "rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":  # "HEAD": a detached checkout has no branch
        tags[GIT_BRANCH] = branch
    url = git(folder, "config", "--get", "remote.origin.url")
    if url:
        tags[GIT_REPO_URL] = url
    status = git(folder, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        tags[GIT_DIRTY] = str(bool(status)).lower()
    return tags


def rnnlab_commit() -> str | None:
    """rnnlab's own commit when it is imported from a git checkout (an editable install)."""
    package_root = Path(rnnlab.__file__).resolve().parent.parent
    top = git(package_root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != package_root:
        return None  # installed into site-packages (perhaps inside some other repository)
    return git(package_root, "rev-parse", "HEAD")


def command_line(argv: list[str] | None = None) -> str:
    """The command as the user typed it: ``rnnlab train`` hands Hydra ``rnnlab-train ARGS``."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0] == "rnnlab-train":
        argv = ["rnnlab", "train", *argv[1:]]
    for flag in ("--config-dir", "--config-name"):  # added by rerun=, not typed
        while flag in argv:
            at = argv.index(flag)
            del argv[at : at + 2]
    return shlex.join(argv)


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): MLflow's own fallback
        return "unknown"


def source_tags(command: str, cwd: Path | None = None) -> dict[str, str]:
    """Every source tag of a new run started by ``command`` in ``cwd``."""
    tags = {
        SOURCE_NAME: "rnnlab train",
        SOURCE_TYPE: "LOCAL",
        USER: user(),
        "rnnlab.version": rnnlab.__version__,
        "command": command,
    }
    commit = rnnlab_commit()
    if commit:
        tags["rnnlab.commit"] = commit
    tags.update(git_tags(cwd or Path.cwd()))
    return tags


def description(*, command: str, preset: str | None, reference: str | None) -> str:
    """The run's description in markdown (``mlflow.note.content``, the UI's Description)."""
    lines = ["**Command**", "", f"```\n{command}\n```"]
    if preset:
        lines += ["", f"**Preset**: `experiment={preset}`"]
    if reference:
        lines += ["", f"**Reference**: {reference}"]
    return "\n".join(lines)
