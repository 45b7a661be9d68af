"""The faces' JSON text: json.dumps(indent=2, ensure_ascii=False) byte for byte, compact JSON on request."""
import json

import pytest

from watcher import jsontext

VALUES = [
    {}, [], {"a": []}, {"a": {}}, None, 0, -7, 1.5, True, "",
    {"watch": "contoso", "ticket": 3, "effective": {"v4": ["10.0.0.0/24", "10.0.1.0/24"], "v6": []},
     "removals_at": None, "publication": {"date": "2025-10-28", "change_number": 400}},
    ["x\u00fc\"\\/\n\t\x01", "\u2028 <script>alert(1)</script>", "J\u00fcrgen"],
    {"nested": [[1, [2, [3, {}]]], {"k": [None, False]}]},
    {"1": 2, "b": ("tuple", "as", "array")},
]


@pytest.mark.parametrize("value", VALUES)
def test_indented_text_is_that_of_json_dumps(value):
    assert jsontext.dumps(value) == json.dumps(value, indent=2, ensure_ascii=False)
    assert jsontext.dumps(value, indent=4) == json.dumps(value, indent=4, ensure_ascii=False)


@pytest.mark.parametrize("value", VALUES)
def test_compact_text_reads_back(value):
    text = jsontext.dumps(value, indent=None)
    assert "\n" not in text
    assert json.loads(text) == json.loads(json.dumps(value))


def test_a_type_json_lacks_is_written_as_its_text():
    class Odd:
        def __str__(self) -> str:
            return "odd thing"

    assert json.loads(jsontext.dumps({"v": Odd()})) == {"v": "odd thing"}
