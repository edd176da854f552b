"""Prompt files: `{field}` placeholders filled by `str.format`, literal braces written `{{ }}`.

Every prompt a user may replace (system prompt, synthesizer prompts, judge, page extractor) is
loaded through here and checked at load time, so a stray brace, an unknown placeholder or a
missing one is a ConfigError naming the file, not a KeyError in the middle of a run.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from webdancer.errors import ConfigError


@dataclass(frozen=True)
class PromptTemplate:
    text: str
    source: str

    @classmethod
    def from_file(cls, path: str | Path, fields: tuple[str, ...], optional: tuple[str, ...] = ()) -> "PromptTemplate":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"prompt file {p} not found (set the prompt_file option to an existing file)")
        return cls.checked(p.read_text(encoding="utf-8"), str(p), fields, optional)

    @classmethod
    def load(
        cls, override: str | None, package: str, name: str, fields: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> "PromptTemplate":
        """The user's prompt file when `override` is set, else the default shipped in `package`."""
        if override:
            return cls.from_file(override, fields, optional)
        text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
        return cls.checked(text, f"{package}/{name}", fields, optional)

    @classmethod
    def checked(cls, text: str, source: str, fields: tuple[str, ...], optional: tuple[str, ...] = ()) -> "PromptTemplate":
        allowed = set(fields) | set(optional)
        listing = ", ".join("{" + f + "}" for f in (*fields, *optional))
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as e:
            raise ConfigError(f"prompt file {source}: {e}; write a literal brace as {{{{ or }}}} (placeholders: {listing})") from None
        unknown = sorted(used - allowed)
        if unknown:
            shown = ", ".join("{" + u + "}" for u in unknown)
            raise ConfigError(
                f"prompt file {source} uses {shown}, which this prompt does not fill; "
                f"its placeholders are {listing}; write literal braces as {{{{ and }}}}"
            )
        missing = [f for f in fields if f not in used]
        if missing:
            shown = ", ".join("{" + m + "}" for m in missing)
            raise ConfigError(f"prompt file {source} lacks {shown}; this prompt must contain {listing}")
        return cls(text, source)

    def fill(self, **values: object) -> str:
        return self.text.format(**values)
