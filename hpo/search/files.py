"""Reading the YAML files a user writes (studies, search spaces, papers): one loader for all, strict about
duplicate keys, with the file's leading comment block as its description; finding a file by name or path."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from hpo.errors import ConfigError
from hpo.provenance import ROOT
from hpo.search.storage import SAFE_NAME
from hpo.sources import path_candidates, tried_text

# --- YAML ---------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 as a float (YAML 1.1 wants 1.0e-3) and refuses duplicate keys."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> tuple[object, str]:
    """The parsed document and its leading comment block (the file's description)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read ({e.strerror})") from None
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(path, where, f"malformed YAML: {problem}") from None
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    return doc, "\n".join(header).strip()


def file_label(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resolve_file(name_or_path: str, folder: str, what: str, source: str = "<command line>", key: str = "",
                 base: Path | None = None) -> Path:
    """NAME → folder/NAME.yaml (in the working directory, then the project); or an existing path. A relative
    path written inside a file (`base`: that file's folder) is relative to that file, as an include reads, so
    that the study works from any directory; the working directory is tried second, for files written before."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or "/" in name_or_path:
        tried = path_candidates(p, base)
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise ConfigError(source if key else name_or_path, key, f"no such {what} file: {tried_text(tried)}")
    if not SAFE_NAME.match(name_or_path):
        raise ConfigError(source, key or "name", f"{name_or_path!r} is not a safe {what} name (letters, digits, _ . -)")
    for base in (Path.cwd(), ROOT):
        candidate = base / folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in (ROOT / folder).glob("*.yaml"))
    near = difflib.get_close_matches(name_or_path, known, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ConfigError(source, key or "name", f"no {what} named {name_or_path!r} in {folder}/; {hint}"
                                             f"known: {', '.join(known)}")


