"""Memo: the answers of a function remembered, within bounds."""

from __future__ import annotations

from gateway.memo import Memo


def test_a_memo_answers_as_the_function_and_asks_it_once_per_key() -> None:
    asked: list[str] = []

    def upper(key: str) -> str:
        asked.append(key)
        return key.upper()

    memo = Memo(upper, size=2, longest=5)
    assert [memo["ab"], memo["ab"], memo["cd"]] == ["AB", "AB", "CD"]
    assert asked == ["ab", "cd"]
    # full, or a key too long: answered, not kept
    assert [memo["ef"], memo["ef"], memo["toolong"]] == ["EF", "EF", "TOOLONG"]
    assert asked == ["ab", "cd", "ef", "ef", "toolong"]
    assert dict(memo) == {"ab": "AB", "cd": "CD"}
