"""http_json's Cancel: a token made in a thread inside another's scope() is that one's
child, cancelled with it whether it was made before or after the cancel; a token made
outside the scope, or in another thread, is not."""

from __future__ import annotations

import threading

from cgrpo.rewards.http_json import Cancel


def test_a_child_made_before_or_after_the_cancel_is_cancelled() -> None:
    parent = Cancel()
    with parent.scope():
        before = Cancel()
    parent.cancel()
    with parent.scope():
        after = Cancel()
    assert before.cancelled and after.cancelled


def test_tokens_outside_the_scope_are_left_alone() -> None:
    parent, made = Cancel(), {}
    with parent.scope():
        with Cancel().scope():  # an inner scope: its tokens are the inner token's children
            made["grandchild"] = Cancel()
        thread = threading.Thread(target=lambda: made.setdefault("other_thread", Cancel()))
        thread.start()
        thread.join()
    made["after_scope"] = Cancel()
    parent.cancel()
    assert made["grandchild"].cancelled
    assert not made["other_thread"].cancelled and not made["after_scope"].cancelled


def test_cancelling_a_child_leaves_its_parent() -> None:
    parent = Cancel()
    with parent.scope():
        child = Cancel()
    child.cancel()
    assert child.cancelled and not parent.cancelled
