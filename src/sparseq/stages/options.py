"""Options of the stages a pipeline file names.

A stage's options are a frozen dataclass declared next to the stage; pipeline files
set its fields (typed: the loader checks each value against the field's type), and
`rules()` lists the range checks as (key, ok, reason) so an error names the key.
"""

Rule = tuple[str, bool, str]


class StageOptions:
    """Base of every stage's options dataclass."""

    def rules(self) -> list[Rule]:
        """(key, ok, reason) for every range check, keys relative to the options."""
        return []
