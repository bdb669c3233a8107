"""NCode encode/decode as LangChain tools."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, model_validator

from collm_nas.tools.messages import validation_message
from collm_nas.core.errors import UserError
from collm_nas.core.space import SearchSpace

if TYPE_CHECKING:  # LangChain is imported when a tool is made, not with the checker
    from langchain_core.tools import StructuredTool

class EncodeArgs(BaseModel):
    architecture: str | None = Field(
        default=None,
        description="the architecture in the space's own notation (for nb201 the benchmark string)",
    )
    choices: dict[str, str] | None = Field(
        default=None, description="the architecture as {decision name: option}"
    )

    @model_validator(mode="after")
    def _one(self) -> "EncodeArgs":
        if (self.architecture is None) == (self.choices is None):
            raise ValueError("give exactly one of 'architecture' or 'choices'")
        return self


class DecodeArgs(BaseModel):
    ncode: str = Field(description="an NCode of the space")


def make_ncode_tools(space: SearchSpace) -> tuple[StructuredTool, StructuredTool]:
    """``encode_ncode`` and ``decode_ncode`` tools bound to ``space``."""
    from langchain_core.tools import StructuredTool, ToolException

    def encode(architecture: str | None = None, choices: dict[str, str] | None = None) -> dict:
        try:
            code = space.parse_arch(architecture) if architecture is not None else space.encode(choices or {})
        except UserError as e:
            raise ToolException(str(e)) from None
        return {"ncode": code, "architecture": space.format_arch(code)}

    def decode(ncode: str) -> dict:
        try:
            choices = space.decode(ncode)
        except UserError as e:
            raise ToolException(str(e)) from None
        return {"ncode": ncode, "choices": choices, "architecture": space.format_arch(ncode)}

    encode_tool = StructuredTool.from_function(
        func=encode,
        name="encode_ncode",
        description=f"Turn an architecture of the '{space.name}' space into its NCode.",
        args_schema=EncodeArgs,
        handle_tool_error=True,
        handle_validation_error=validation_message,
    )
    decode_tool = StructuredTool.from_function(
        func=decode,
        name="decode_ncode",
        description=f"Turn an NCode of the '{space.name}' space into its decisions and readable architecture.",
        args_schema=DecodeArgs,
        handle_tool_error=True,
        handle_validation_error=validation_message,
    )
    return encode_tool, decode_tool
