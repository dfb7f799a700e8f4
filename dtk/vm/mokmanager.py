"""Driving shim's MokManager over the serial console, as a person at the machine does
after `mokutil --import`. Pure: console bytes in, keys out.

What MokManager (shim 16.1's mmx64.efi) draws and what is answered, matched by text,
never by position (the menus change with what is pending):

    "Press any key to perform MOK management"   a key (else shim boots on after 10 s)
    "Perform MOK management" menu               "Enroll MOK"
    "[Enroll MOK]" menu (View key 0, …)         "Continue"
    "Enroll the key(s)?"                        "Yes"
    "Password:"                                 the password, Enter (not echoed)
    "Perform MOK management" menu               "Reboot" (the firmware resets)

A menu item is chosen by moving the highlight (drawn white on black, `ESC[40m`; the
others white on blue, `ESC[44m`) onto its label with Down, then Enter. A wrong password
("Password doesn't match") is never retried: the enrolment fails with MokManager's words.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

DOWN = b"\x1b[B"
ENTER = b"\r"
# A menu item as MokManager draws it: cursor position, │ label │, then the next colour.
_HIGHLIGHT = re.compile(rb"\x1b\[40m\x1b\[\d+;\d+H\xb3 *([^\xb3\x1b]*?) *\xb3\x1b\[0m")
_ITEM = re.compile(rb"\x1b\[\d+;\d+H\xb3 *([^\xb3\x1b]*?) *\xb3")
# A box's top-left corner and its bottom border (└───┘), in the firmware's code page 437.
BOX_TOP = b"\xda"
_BOX_BOTTOM = re.compile(rb"\xc0\xc4*\xd9")
_MAX_MOVES = 12
SETTLE_S = 0.3  # a screen is drawn when the console has been quiet this long


class Stage(enum.Enum):
    PROMPT = "the prompt to press a key"
    MAIN = "the main menu (Enroll MOK)"
    ENROLL = "the key list (Continue)"
    CONFIRM = "the question 'Enroll the key(s)?'"
    PASSWORD = "the password prompt"  # noqa: S105 (a screen, not a secret)
    REBOOT = "the main menu again (Reboot)"
    DONE = "done"


# stage → (the text that shows its screen, the item to choose; None: type the password)
_SCREENS: dict[Stage, tuple[bytes, str | None]] = {
    Stage.MAIN: (b"Perform MOK management", "Enroll MOK"),
    Stage.ENROLL: (b"[Enroll MOK]", "Continue"),
    Stage.CONFIRM: (b"Enroll the key(s)?", "Yes"),
    Stage.PASSWORD: (b"Password:", None),
    Stage.REBOOT: (b"Perform MOK management", "Reboot"),
}
_NEXT = {Stage.PROMPT: Stage.MAIN, Stage.MAIN: Stage.ENROLL, Stage.ENROLL: Stage.CONFIRM,
         Stage.CONFIRM: Stage.PASSWORD, Stage.PASSWORD: Stage.REBOOT, Stage.REBOOT: Stage.DONE}
_REFUSALS = (b"Password doesn't match", b"Password limit reached", b"Failed to enroll keys")


class MokManagerError(Exception):
    """MokManager did not do what a person's answers should make it do."""


@dataclass
class MokManagerDriver:
    """Feed it the whole console so far (`offset`: how many earlier bytes were dropped)
    and how long the console has been quiet; it returns the keys to type now."""

    password: str
    stage: Stage = Stage.PROMPT
    position: int = 0  # console offset after the current screen's title
    sent_at: int = 0  # console offset when keys were last typed: wait for the answer
    moves: int = 0
    steps: list[str] = field(default_factory=list)  # what was done, for the log

    def feed(self, offset: int, console: bytes, quiet_s: float) -> bytes:
        """Keys to type now (b"" for none yet): only once the console has answered the
        last keys and has been quiet for SETTLE_S, so each screen is judged drawn."""
        end = offset + len(console)
        if self.stage is Stage.DONE or end <= self.sent_at:
            return b""
        keys = self._decide(offset, console, quiet_s)
        if keys:
            self.sent_at = end
        return keys

    def _decide(self, offset: int, console: bytes, quiet_s: float) -> bytes:
        start = max(0, self.position - offset)
        seen = console[start:]
        refused = next((r for r in _REFUSALS if r in seen), None)
        if refused is not None and self.stage is Stage.REBOOT:
            raise MokManagerError(f"MokManager said '{refused.decode()}' after the password: "
                                  "dtk never retries it (the pending enrolment is used up; "
                                  "import the key again)")
        if self.stage is Stage.PROMPT:
            at = seen.find(b"Press any key to perform MOK management")
            return b"" if at < 0 else \
                self._advance(offset + start + at, b" ", "pressed a key at shim's prompt")
        title, choice = _SCREENS[self.stage]
        at = seen.find(title)
        box = None
        if at >= 0 and quiet_s >= SETTLE_S:
            frame = max(0, seen.rfind(BOX_TOP, 0, at))  # the box the title is drawn in
            box = self._last_box(seen[frame:], offset + start + frame)
        if box is None:
            return b""
        title_end = offset + start + at + len(title)
        if choice is not None:
            return self._choose(box, choice, title_end)
        if title not in box:  # the password prompt's own box, drawn whole
            return b""
        return self._advance(title_end, self.password.encode() + ENTER, "typed the password")

    def _last_box(self, screen: bytes, screen_at: int) -> bytes | None:
        """The last menu box (┌ … ┘) drawn completely since the keys were typed: a box
        drawn before them, or still being drawn, does not show their effect yet."""
        bottoms = list(_BOX_BOTTOM.finditer(screen))
        if not bottoms:
            return None
        end = bottoms[-1].end()
        begin = screen.rfind(BOX_TOP, 0, end)
        if begin < 0 or screen_at + end <= self.sent_at:
            return None
        return screen[begin:end]

    def _choose(self, box: bytes, choice: str, title_end: int) -> bytes:
        highlighted = [m.group(1).decode("latin-1") for m in _HIGHLIGHT.finditer(box)]
        if not highlighted:  # a frame, not a menu: the menu is still to come
            return b""
        current = highlighted[-1]
        if current == choice:
            return self._advance(title_end, ENTER, f"chose '{choice}'")
        if self.moves >= _MAX_MOVES:
            items = [m.group(1).decode("latin-1") for m in _ITEM.finditer(box)]
            raise MokManagerError(f"the highlight never reached '{choice}' in MokManager's "
                                  f"menu (it shows: {', '.join(i for i in items if i)}; "
                                  f"highlighted: '{current}')")
        self.moves += 1
        return DOWN

    def _advance(self, position: int, keys: bytes, what: str) -> bytes:
        self.position, self.moves = position, 0
        self.steps.append(what)
        self.stage = _NEXT[self.stage]
        return keys
