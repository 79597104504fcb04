import pytest

from protocols.codec import FrameDecoder, decode_json, encode_json
from protocols.errors import InvalidRequest, TooLarge


def test_frames_split_across_feeds_are_reassembled():
    dec = FrameDecoder(100)
    dec.feed(b'{"a"')
    assert dec.next_frame() is None
    dec.feed(b":1}\n{\"b\":2}\n{")
    assert dec.next_frame() == b'{"a":1}'
    assert dec.next_frame() == b'{"b":2}'
    assert dec.next_frame() is None
    assert dec.buffered == 1


def test_frame_over_limit_without_newline_is_refused():
    dec = FrameDecoder(10)
    dec.feed(b"x" * 11)
    with pytest.raises(TooLarge, match="limit of 10 bytes"):
        dec.next_frame()


def test_frame_over_limit_with_newline_is_refused():
    dec = FrameDecoder(10)
    dec.feed(b"y" * 20 + b"\n")
    with pytest.raises(TooLarge):
        dec.next_frame()


def test_frame_exactly_at_limit_is_accepted():
    dec = FrameDecoder(10)
    dec.feed(b"z" * 10 + b"\n")
    assert dec.next_frame() == b"z" * 10


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\xff\xfe", "not valid UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"NaN", "not valid JSON"),
        (b"[" * 100 + b"]" * 100, "nested deeper than 64"),
        (b"1" * 5000, "not valid JSON"),
        (b"[" * 100000, "nested deeper"),
    ],
)
def test_decode_json_rejects_with_a_reason(frame, message):
    with pytest.raises(InvalidRequest, match=message):
        decode_json(frame)


def test_encode_is_compact_single_line():
    data = encode_json({"a": [1, 2], "t": "x\ny"})
    assert data == b'{"a":[1,2],"t":"x\\ny"}\n'
    assert data.count(b"\n") == 1


def test_depth_is_bounded_at_the_limit_whatever_the_brackets_in_strings():
    # decode_json walks a value for its depth only when the frame has more brackets than the
    # limit allows levels: these frames sit on both sides of that shortcut.
    assert decode_json(b"[" * 64 + b"]" * 64, max_depth=64) is not None  # 64 brackets, 64 levels
    with pytest.raises(InvalidRequest, match="nested deeper than 64"):
        decode_json(b"[" * 65 + b"]" * 65, max_depth=64)
    with pytest.raises(InvalidRequest, match="nested deeper than 3"):
        decode_json(b'{"a":[{"b":[1]}],"s":"' + b"[{" * 50 + b'"}', max_depth=3)
    shallow = decode_json(b'{"s":"' + b"[{" * 50 + b'","t":[1]}', max_depth=2)  # brackets only in text
    assert shallow["t"] == [1]
