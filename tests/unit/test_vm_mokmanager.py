"""The MokManager driver on consoles recorded from real boots (shim 16.1 under OVMF,
tests/data/vm/*.console: the research behind issue 25). Each recording holds the screens
MokManager drew in answer to the keys a driver sent then; replayed a piece at a time, the
driver must send the same answers, in order, and stop at a refused password."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.vm import mokmanager as mm

DATA = Path(__file__).parent.parent / "data" / "vm"


def replay(console: bytes, password: str, step: int = 64) -> list[bytes]:
    driver = mm.MokManagerDriver(password)
    sent = []
    for end in range(step, len(console) + step, step):
        keys = driver.feed(0, console[:end], quiet_s=1.0)
        if keys:
            sent.append(keys)
        if keys == password.encode() + mm.ENTER:  # at its own prompt, not on a later screen
            assert b"Reboot" not in console[:end]
    assert driver.stage is mm.Stage.DONE, (driver.stage, driver.steps)
    return sent


# Steps smaller than a screen: a real console shows a screen's answer only after the key.
@pytest.mark.parametrize("step", [8, 64, 128])
def test_the_enrolment_is_answered_as_a_person_answers_it(step: int) -> None:
    console = (DATA / "mokmanager-enrol.console").read_bytes()
    assert replay(console, "pw", step) == [
        b" ",  # shim's prompt
        mm.DOWN, mm.ENTER,  # Continue boot -> Enroll MOK
        mm.DOWN, mm.ENTER,  # View key 0 -> Continue
        mm.DOWN, mm.ENTER,  # No -> Yes
        b"pw\r",  # the password
        mm.ENTER,  # Reboot
    ]


def test_nothing_is_typed_until_the_console_is_quiet_and_has_answered() -> None:
    console = (DATA / "mokmanager-enrol.console").read_bytes()
    driver = mm.MokManagerDriver("pw")
    at = console.index(b"Perform MOK management")
    assert driver.feed(0, console[:at + 2000], quiet_s=1.0) == b" "
    # the same console again: MokManager has not answered the key yet
    assert driver.feed(0, console[:at + 2000], quiet_s=1.0) == b""
    assert driver.feed(0, console, quiet_s=0.0) == b""  # still drawing
    assert driver.feed(0, console, quiet_s=1.0) == mm.DOWN


def test_a_wrong_password_is_never_retried() -> None:
    console = (DATA / "mokmanager-wrong-password.console").read_bytes()
    driver = mm.MokManagerDriver("wrong")
    with pytest.raises(mm.MokManagerError, match=r"Password doesn't match.*never retries"):
        for end in range(64, len(console) + 64, 64):
            driver.feed(0, console[:end], quiet_s=1.0)
    assert driver.steps[-1] == "typed the password"


def test_a_highlight_that_never_reaches_the_item_ends_with_what_the_menu_shows() -> None:
    console = (DATA / "mokmanager-enrol.console").read_bytes()
    item = console.index(b"Continue boot")  # the main menu's first box, highlight on it
    first_box = console[:console.index(b"\xd9", console.index(b"\xc0", item)) + 1]
    driver = mm.MokManagerDriver("pw")
    assert driver.feed(0, first_box, quiet_s=1.0) == b" "
    with pytest.raises(mm.MokManagerError, match=r"never reached 'Enroll MOK'.*Continue boot"):
        for _ in range(20):  # the same screen over and over: the highlight never moves
            driver.sent_at = 0
            assert driver.feed(0, first_box, quiet_s=1.0) == mm.DOWN
