"""The argument models of the image-making tools: unknown arguments kept (within the caps), and every
refusal explained by the chosen model's catalogue entry, before the tool runs (no row, nothing sent)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from pydantic import ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from app.core.extras import ExtraCaps, extra_problem
from app.core.styles import Style

EXTRA_KWARG = "extra_arguments"
GIVEN_KWARG = "given_arguments"  # which arguments the caller gave (the others take the model's defaults)


def invalid(problems: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_arguments",
                               "Invalid arguments: {problems}. Nothing was recorded or sent to Pixazo.",
                               {"problems": problems})


class CatalogueArgs(ArgModelBase):
    """Keeps unknown arguments (teams tag requests with them) and explains bad ones by their range.

    Subclasses say how one schema error reads (`_problem_text`) and what the chosen model refuses among
    values the schema let through (`_model_problems`); the schema's bounds are the widest any model takes.
    """

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True, hide_input_in_errors=True)

    # Set on each model built from the settings.
    extra_caps: ClassVar[ExtraCaps] = ExtraCaps()
    # Whether the tool function takes GIVEN_KWARG (a tool whose defaults depend on the model does).
    passes_given: ClassVar[bool] = False
    # The team styles a `style` field names (PIXAZO_STYLES_FILE); the tool function receives the Style.
    styles: ClassVar[Mapping[str, Style]] = {}

    @classmethod
    def _problem_text(cls, field: str, err: ErrorDetails) -> str:
        if err["type"] == "missing":
            return f"`{field}` is required"
        return f"`{field}`: {err['msg']}"

    def _model_problems(self) -> list[str]:
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _explain(cls, data: Any, handler: Any) -> Any:
        try:
            model = handler(data)
        except ValidationError as exc:
            problems: list[str] = []
            for err in exc.errors():
                text = cls._problem_text(str(err["loc"][0]) if err["loc"] else "", err)
                if text not in problems:
                    problems.append(text)
            raise invalid("; ".join(problems)) from None
        if problems := model._model_problems():
            raise invalid("; ".join(problems))
        if (problem := extra_problem(model.model_extra or {}, cls.extra_caps)) is not None:
            raise invalid(problem)
        return model

    def chosen_style(self) -> Style | None:
        name = getattr(self, "style", None)
        return self.styles.get(name) if isinstance(name, str) else None

    def given(self) -> frozenset[str]:
        """The declared arguments the caller gave (not the extras, not the defaults)."""
        return frozenset(self.model_fields_set & set(type(self).model_fields))

    def model_dump_one_level(self) -> dict[str, Any]:
        kwargs = super().model_dump_one_level()
        kwargs[EXTRA_KWARG] = dict(self.model_extra or {})
        if "style" in kwargs:
            kwargs["style"] = self.chosen_style()
        if self.passes_given:
            kwargs[GIVEN_KWARG] = self.given()
        return kwargs
