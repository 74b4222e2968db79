"""The [learner] table and the [[operators]] list of a pipeline file -> Stage entries.

Both name a `kind` whose options dataclass types the other keys. In files, a
`operators` list replaces the whole list it inherits (so the file you read lists every
operator that runs, or none and inherits them all); flags override one option of one
operator: `--operators.KIND.KEY VALUE` when the pipeline has one operator of that
kind, `--operators.INDEX.KEY VALUE` (0-based) always. A file or flag that changes
`learner.kind` starts the learner's options afresh.
"""

import dataclasses
import difflib
import typing
from typing import Any

from sparseq.pipeline.config.coerce import build_dataclass, flatten, set_dotted
from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.typed_value import CLI, typed_value
from sparseq.pipeline.registry import StageKindError, module_folder, resolve
from sparseq.pipeline.stage import Stage, operator_key, options_class

Assignment = tuple[str, Any, str]  # dotted key, value, source


@dataclasses.dataclass
class Entry:
    """One stage being assembled: its kind, where the kind was set, and its options
    as key -> (value, source)."""

    kind: Any
    kind_source: str
    options: dict[str, tuple[Any, str]] = dataclasses.field(default_factory=dict)


def _entry_from_table(table: Any, index: int, source: str) -> Entry:
    if not isinstance(table, dict):
        raise ConfigError(source, "must be a table with a kind key ([[operators]])", f"operators.{index}", table)
    if "kind" not in table:
        raise ConfigError(source, "needs a kind key (a stage name or module:Class)", f"operators.{index}", table)
    options = _option_values({k: v for k, v in table.items() if k != "kind"}, source)
    return Entry(table["kind"], source, options)


def _option_values(table: dict[str, Any], source: str) -> dict[str, tuple[Any, str]]:
    """Option key (dotted for nested tables) -> (value, source)."""
    return {key: (value, src) for key, value, src in flatten(table, source)}


def _entry_from_stage(stage: Stage, source: str) -> Entry:
    options = {}
    if dataclasses.is_dataclass(stage.options):
        for f in dataclasses.fields(stage.options):
            options[f.name] = (getattr(stage.options, f.name), source)
    elif isinstance(stage.options, dict):
        options = _option_values(stage.options, source)
    return Entry(stage.kind, source, options)


def _select(entries: list[Entry], selector: str, dotted: str, value: Any) -> int:
    if selector.isdigit():
        index = int(selector)
        if index >= len(entries):
            raise ConfigError(CLI, f"the pipeline has {len(entries)} operators (0-based index)", dotted, value)
        return index
    matches = [i for i, e in enumerate(entries) if e.kind == selector]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(CLI, f"{len(matches)} operators of kind {selector!r}: name one by index", dotted, value)
    kinds = ", ".join(str(e.kind) for e in entries) or "none"
    raise ConfigError(CLI, f"no operator of kind {selector!r} in this pipeline (it has: {kinds})", dotted, value)


class StageAssembler:
    """Collects learner and operator assignments in precedence order."""

    def __init__(self, defaults_learner: Stage, defaults_operators: tuple[Stage, ...]):
        self.learner = _entry_from_stage(defaults_learner, "defaults")
        self.operators = [_entry_from_stage(op, "defaults") for op in defaults_operators]
        self.operators_source = "defaults"

    def takes(self, dotted: str) -> bool:
        return dotted.split(".", 1)[0] in ("learner", "operators")

    def add(self, dotted: str, value: Any, source: str) -> None:
        head, _, rest = dotted.partition(".")
        if head == "learner":
            if not rest:
                raise ConfigError(source, "is a section, not a value", dotted, value)
            if rest == "kind":
                if value != self.learner.kind:
                    self.learner = Entry(value, source)
                else:
                    self.learner.kind_source = source
            else:
                self.learner.options[rest] = (value, source)
            return
        if not rest:
            if not isinstance(value, list):
                raise ConfigError(source, "must be a list of tables ([[operators]] with a kind key)", dotted, value)
            self.operators = [_entry_from_table(t, i, source) for i, t in enumerate(value)]
            self.operators_source = source
            return
        if source != CLI:
            raise ConfigError(
                source,
                "operators are a list ([[operators]] tables with a kind key, in the order they run); "
                "[operators.NAME] sections with enabled = ... are gone",
                dotted,
                value,
            )
        selector, _, key = rest.partition(".")
        index = _select(self.operators, selector, dotted, value)
        if not key:
            raise ConfigError(source, "needs an option name: --operators.KIND.KEY VALUE", dotted, value)
        if key == "kind":
            raise ConfigError(source, "an operator's kind cannot be changed by a flag; edit the file", dotted, value)
        self.operators[index].options[key] = (value, source)

    def build(
        self, python_path: tuple[str, ...], search_folders: tuple[str, ...]
    ) -> tuple[Stage, tuple[Stage, ...], dict[str, str], tuple[str, ...]]:
        """The typed Stage entries, the source of every key, and the python_path folders
        that `module:Class` kinds needed (search_folders: the pipeline files' folders)."""
        sources: dict[str, str] = {}
        needed = list(python_path)
        learner = self._typed(self.learner, "learner", "learner", sources, needed, search_folders)
        if self.operators_source != "defaults":
            sources["operators"] = self.operators_source
        kinds = [entry.kind for entry in self.operators]
        operators = tuple(
            self._typed(entry, "operator", operator_key(kinds, i), sources, needed, search_folders)
            for i, entry in enumerate(self.operators)
        )
        return learner, operators, sources, tuple(needed)

    def _typed(
        self,
        entry: Entry,
        role: str,
        prefix: str,
        sources: dict[str, str],
        needed: list[str],
        search_folders: tuple[str, ...],
    ) -> Stage:
        kind = entry.kind
        if entry.kind_source != "defaults":
            sources[f"{prefix}.kind"] = entry.kind_source
        if isinstance(kind, str) and ":" in kind:
            folder = module_folder(kind, (*needed, *search_folders))
            if folder is not None and folder not in needed:
                needed.append(folder)
        try:
            cls = resolve(kind, role, tuple(needed))
            options_cls = options_class(cls, role)
        except (StageKindError, TypeError) as error:
            raise ConfigError(entry.kind_source, str(error), f"{prefix}.kind", kind) from None
        return Stage(kind, _options(options_cls, entry.options, prefix, kind, entry.kind_source, sources))


def _options(
    options_cls: type,
    values: dict[str, tuple[Any, str]],
    prefix: str,
    kind: Any,
    kind_source: str,
    sources: dict[str, str],
) -> Any:
    """The typed options dataclass from key -> (value, source); records the sources."""
    tree: dict[str, Any] = {}
    for key, (value, source) in values.items():
        dotted = f"{prefix}.{key}"
        hint = _option_hint(options_cls, key, dotted, source, value, kind)
        typed = typed_value(hint, dotted, value, source)
        set_dotted(tree, key, typed)
        if source != "defaults":  # an unset key's source is the file that names the stage
            sources[dotted] = source
    try:
        return build_dataclass(options_cls, tree)
    except TypeError as error:  # a required option is missing
        raise ConfigError(kind_source, f"{kind}: {error}", f"{prefix}.kind", kind) from None


def typed_options(options_cls: type, raw: dict[str, Any], prefix: str, source: str, kind: Any) -> Any:
    """Options from a Python dict (a `Stage(kind, {...})` of a PipelineConfig)."""
    return _options(options_cls, _option_values(raw, source), prefix, kind, source, {})


def _option_hint(options_cls: type, key: str, dotted: str, source: str, value: Any, kind: Any) -> Any:
    hint: Any = options_cls
    for part in key.split("."):
        fields = typing.get_type_hints(hint) if dataclasses.is_dataclass(hint) else {}
        if part not in fields:
            names = _all_option_keys(options_cls)
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint_text = f"did you mean {dotted.rsplit('.', key.count('.') + 1)[0]}.{close[0]}?" if close else ""
            known = f"{kind!r} has: {', '.join(names)}" if names else f"{kind!r} has no options"
            raise ConfigError(source, f"unknown key; {hint_text or known}", dotted, value)
        hint = fields[part]
    if dataclasses.is_dataclass(hint):
        raise ConfigError(source, "is a section, not a value", dotted, value)
    return hint


def _all_option_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys.extend(_all_option_keys(hint, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys
