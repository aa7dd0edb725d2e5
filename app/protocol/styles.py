"""Team styles in MCP: the `style` argument of the image-making tools, and one prompt per style.

Without PIXAZO_STYLES_FILE there is no `style` argument and no prompt: tools/list does not grow.
The image-making tools are those that turn the caller's words into a new picture: pix_generate and
pix_inpaint. The editing tools without a prompt (upscale, remove_background, outpaint) have nothing to
style, and pix_regenerate repeats a recorded prompt (a styled row's is already expanded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from mcp.server.mcpserver.prompts.base import Message, Prompt, PromptArgument
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, InputRequiredResult, TextContent
from pydantic import Field

from app.core.styles import Style
from app.pixazo.gateway import PROMPT


def style_field(styles: Mapping[str, Style], *, has_model: bool) -> dict[str, Any]:
    """The `style` field for an image-making tool's argument model (none without styles)."""
    if not styles:
        return {}
    listed = "; ".join(f"`{s.name}`: {s.description}" + (f" ({s.model})" if has_model and s.model else "")
                       for s in styles.values())
    note = " Your own arguments win over the style's." if has_model else (
        " Its model does not apply here; your own arguments win over the style's.")
    names = tuple(styles)
    return {"style": (Annotated[Literal[names] | None, Field(
        description=f"A team style: your prompt goes into its template.{note} {listed}")], None)}


def not_applied_note(result: CallToolResult, style: Style, model: str, names: list[str]) -> CallToolResult:
    """Say which of a style's defaults the model did not take (its own defaults applied)."""
    if names:
        result.content.append(TextContent(type="text", text=(
            f"Style {json.dumps(style.name)}: not applied with {model}: {', '.join(names)} "
            "(the model's defaults applied).")))
    return result


class SubjectPrompt(Prompt):
    """A style's prompt. Its `subject` is checked here so that a client hears what is wrong (invalid
    params) rather than the SDK's "Internal server error" for a missing or unusable argument."""

    async def render(self, arguments: dict[str, Any] | None, context: Any) -> list[Message] | InputRequiredResult:
        subject = (arguments or {}).get("subject")
        if not isinstance(subject, str) or not subject.strip():
            raise MCPError(INVALID_PARAMS,
                           f"Prompt {json.dumps(self.name)} needs `subject`: what the image should show.")
        if len(subject) > PROMPT.maximum:
            raise MCPError(INVALID_PARAMS, f"`subject` is at most {int(PROMPT.maximum)} characters.")
        return await super().render({"subject": subject}, context)


def style_prompt(style: Style, tool: str = "pix_generate") -> Prompt:
    """The style as an MCP prompt (a command in most clients): it asks the agent to make the subject in it."""

    async def render(subject: str) -> str:
        model = f" It uses {style.model} unless you choose another model." if style.model else ""
        return (f"Make an image of {subject.strip()} in our team style {json.dumps(style.name)} ({style.description}). "
                f"Call {tool} with prompt={json.dumps(subject.strip(), ensure_ascii=False)} and "
                f"style={json.dumps(style.name)}; the server adds the style's wording and settings.{model}")

    prompt = SubjectPrompt.from_function(render, name=style.name, title=f"Style: {style.name}",
                                         description=style.description)
    prompt.arguments = [PromptArgument(name="subject", description="What the image should show.", required=True)]
    return prompt
