from protocols.messages import Card, ToolRequest, ToolResponse, ToolResult


def test_go_card_with_nulls_and_unknown_fields_parses():
    card = Card.model_validate({
        "name": "go-node", "version": "1.0", "peerId": "12D3KooWabc", "capabilities": None,
        "tools": [{"name": "t", "description": "d", "parameters": None, "extra": 1}],
        "timestamp": 1700000000, "somethingNew": True,
    })
    assert card.capabilities == [] and card.tools[0].parameters == []
    wire = card.to_wire()
    assert wire["peerId"] == "12D3KooWabc" and "somethingNew" not in wire


def test_go_wrapped_arguments_are_flattened():
    req = ToolRequest.model_validate({
        "id": "1", "name": "t", "timestamp": 1,
        "arguments": {"args": {"a": 1}, "params": {"b": "x"}, "secrets": {"c": "s"}},
    })
    assert req.flat_arguments() == {"a": 1, "b": "x", "c": "s"}


def test_plain_arguments_named_like_wrappers_are_not_flattened():
    req = ToolRequest(id="1", name="t", arguments={"args": "not a dict"})
    assert req.flat_arguments() == {"args": "not a dict"}


def test_failure_response_carries_error_and_is_error_result():
    resp = ToolResponse.failure("7", -32601, "no tool x")
    wire = resp.to_wire()
    assert wire["error"] == {"code": -32601, "message": "no tool x"}
    assert wire["result"]["isError"] is True
    assert wire["result"]["content"] == [{"type": "text", "text": "no tool x"}]


def test_unknown_content_kinds_pass_through():
    result = ToolResult.model_validate({"content": [{"type": "image", "data": "AAA", "mimeType": "image/png"}]})
    assert result.to_wire()["content"][0] == {"type": "image", "data": "AAA", "mimeType": "image/png"}
