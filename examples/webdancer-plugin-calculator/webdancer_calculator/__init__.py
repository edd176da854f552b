"""A calculator tool for the webdancer agent: arithmetic on numbers, nothing else is evaluated."""

import ast
import operator

from webdancer import hookimpl
from webdancer.tools import Tool

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate(expression: str) -> float:
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            right = walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](walk(node.left), right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError(f"unsupported expression element: {ast.dump(node)[:40]}")

    return walk(ast.parse(expression, mode="eval"))


class Calculator(Tool):
    name = "calculator"
    description = "Evaluate an arithmetic expression (+ - * / // % **) and return the number."
    parameters = {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. '(1964 - 1888) * 2'"}},
        "required": ["expression"],
    }

    async def call(self, arguments):
        return f"{arguments['expression']} = {evaluate(arguments['expression'])}"


@hookimpl
def register_tools(register):
    register(Calculator)
