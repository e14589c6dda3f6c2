"""AMP with less work per box: Twisted's AMP on the wire, flattened in the code.

The broker handles several boxes per message and thousands of messages a second.
Twisted's ``amp.AMP`` spends most of a box's time in generic machinery: it parses a box
one string at a time through three receiver layers, builds a new responder (a bound
method and two closures) for every command received, normalises every argument name
on every call, copies boxes and chains six or seven callbacks per answer.

:class:`LeanAMP` speaks exactly the same wire (the same boxes, commands, answers and
errors; it interoperates with ``amp.AMP`` and is checked against it in
``tests/test_fastamp.py``), and does that work once per command class (a compiled
:class:`.schemas.Schema`) or in one tight loop:

- :meth:`LeanAMP.dataReceived` splits boxes in a single loop (key lengths above 255
  drop the connection with ``TooLong``, as in Twisted; so does a box past its bounds);
- responders are built once per connection and command, parse their arguments through
  the command's schema, and answer without a Deferred when the responder returns a
  plain value;
- :meth:`LeanAMP.callRemote` builds and parses boxes through the same schemas.

It is built on AMP's public seams: it overrides the methods of ``IBoxReceiver``
(``startReceivingBoxes`` is Twisted's, ``ampBoxReceived``, ``stopReceivingBoxes``),
``IBoxSender.sendBox``, ``dataReceived``, ``callRemote``/``callRemoteString`` and
``locateResponder``, and keeps its own table of questions asked. One private name is
read: ``CommandLocator._commandDispatch``, the table ``Command.responder`` fills (Twisted
offers no public way to ask which command a method answers); setup.cfg pins Twisted to
the minor release tested, and ``tests/test_fastamp.py`` fails loudly on a Twisted whose
table has moved or changed shape.

Not supported, because claude-peers uses none of them: protocol switching and StartTLS
(such commands are answered as unhandled, and ``callRemote`` refuses positional arguments).
"""

from __future__ import annotations

import sys
from types import MethodType
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .schemas import Box, responder, schemas, serialize

__all__ = ["LeanAMP", "serialize"]

_ASK = amp.ASK
_ANSWER = amp.ANSWER
_COMMAND = amp.COMMAND
_ERROR = amp.ERROR
#: Logged as Twisted's AMP logs it (same text), from a logger of our own.
_log = Logger()


def _error_box(failure: Failure, ask: bytes) -> amp.AmpBox:
    """The answer to a failed command, as Twisted's BoxDispatcher makes it: declared
    errors travel and keep the connection; anything else ends it (QuitBox) and is logged."""
    if failure.check(amp.RemoteAmpError):
        error = failure.value
        description = error.description
        if isinstance(description, str):
            description = description.encode("utf-8", "replace")
        box = amp.QuitBox() if error.fatal else amp.AmpBox()
        code = error.errorCode
    else:
        box = amp.QuitBox()
        _log.failure("while receiving response to command", failure)
        code, description = amp.UNKNOWN_ERROR_CODE, b"Unknown Error"
    box[_ERROR] = ask
    box[amp.ERROR_DESCRIPTION] = description
    box[amp.ERROR_CODE] = code
    return box


class LeanAMP(amp.AMP):
    """``amp.AMP`` with the per-box paths flattened (see the module docstring)."""

    _unparsed = b""
    _parsing = False
    _partial_box: amp.AmpBox | None = None
    _partial_key: bytes | None = None
    _arrived_while_parsing: list[bytes] | None = None
    _responders: dict[bytes, Callable[[amp.AmpBox], Any]] | None = None
    #: The largest box (keys and values with their 2-byte lengths) and the most keys; checked
    #: before a string is buffered (see boxTooLarge). Unbounded by default, as in Twisted.
    max_box_bytes: int = sys.maxsize
    max_box_keys: int = sys.maxsize
    _box_size = 0
    _box_keys = 0
    _refused = False
    # Our questions in flight (tag -> Deferred), the last tag, and why no more can be asked.
    _questions: dict[bytes, Deferred] | None = None
    _asked = 0
    _no_more: Failure | None = None

    # --- receiving boxes ---------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Split the stream into boxes (one loop; state kept between reads)."""
        if self._parsing:
            # A responder fed us more bytes (only test transports do): parse them after these.
            if self._arrived_while_parsing is None:
                self._arrived_while_parsing = []
            self._arrived_while_parsing.append(data)
            return
        self._parsing = True
        try:
            self._parse(data)
            while self._arrived_while_parsing:
                later, self._arrived_while_parsing = self._arrived_while_parsing, None
                self._parse(b"".join(later))
        finally:
            self._parsing = False

    def _parse(self, data: bytes) -> None:
        if self._refused:
            return
        if self._unparsed:
            data = self._unparsed + data
        end = len(data)
        at = 0
        box, key = self._partial_box, self._partial_key
        size, keys = self._box_size, self._box_keys
        limit, key_limit = self.max_box_bytes, self.max_box_keys
        receiver = self.boxReceiver
        try:
            while end - at >= 2:
                length = (data[at] << 8) | data[at + 1]
                if key is None:
                    if length == 0:  # end of a box
                        at += 2
                        complete, box = box, None
                        size = keys = 0
                        receiver.ampBoxReceived(complete if complete is not None else Box())
                        # The bounds may change with a box (an Authenticate, a Register).
                        limit, key_limit = self.max_box_bytes, self.max_box_keys
                        continue
                    if length > amp.MAX_KEY_LENGTH:
                        at, box = end, None
                        self.lengthLimitExceeded(length)
                        return
                    if keys >= key_limit:
                        at, box, size, keys = end, None, 0, 0
                        return self._refuse_box(f"a box of more than {key_limit} keys")
                if size + 2 + length > limit:
                    at, box, size, keys = end, None, 0, 0
                    return self._refuse_box(f"a box of more than {limit} bytes")
                start = at + 2
                if end - start < length:
                    break
                at = start + length
                size += 2 + length
                if key is None:
                    key = data[start:at]
                    keys += 1
                    if box is None:
                        box = Box()
                else:
                    box[key] = data[start:at]  # type: ignore[index]
                    key = None
        finally:
            # Kept for the next read (also when a receiver raised): at most one incomplete
            # length prefix and string (< 64 KiB), and the box and key it belongs to.
            self._unparsed = data[at:]
            self._partial_box, self._partial_key = box, key
            self._box_size, self._box_keys = size, keys

    def _refuse_box(self, what: str) -> None:
        self._refused = True  # the rest of the stream is not read
        self.boxTooLarge(what)

    def boxTooLarge(self, what: str) -> None:  # noqa: N802 - AMP's style
        """A box grew past ``max_box_bytes`` or ``max_box_keys``: drop the connection."""
        if self.transport is not None:
            self.transport.loseConnection()

    # --- answering commands --------------------------------------------------------------------

    def locateResponder(self, name: bytes) -> Any:
        """A responder built once per connection and command (Twisted builds one per box)."""
        responders = self._responders
        if responders is None:
            responders = self._responders = {}
        found = responders.get(name)
        if found is None:
            entry = self._commandDispatch.get(name)  # the one private name: see the module docstring
            if entry is None:
                return super().locateResponder(name)
            command, function = entry
            if issubclass(command, (amp.ProtocolSwitchCommand, amp.StartTLS)):
                return None  # switching (StartTLS) is not supported: answered as unhandled
            found = responders[name] = responder(self, schemas(command), MethodType(function, self))
        return found

    def ampBoxReceived(self, box: amp.AmpBox) -> None:  # noqa: N802 - IBoxReceiver's name
        """An answer to one of our questions, an error answer, or a command to answer."""
        if _ANSWER in box:
            question = self._question(box[_ANSWER])
            if question is not None:
                question.addErrback(self.unhandledError)
                question.callback(box)
        elif _ERROR in box:
            question = self._question(box[_ERROR])
            if question is not None:
                question.addErrback(self.unhandledError)
                question.errback(_remote_error(box))
        elif _COMMAND in box:
            self._command_received(box)
        else:
            raise amp.NoEmptyBoxes(box)

    def _command_received(self, box: amp.AmpBox) -> None:
        ask = box.get(_ASK)
        found = self.locator.locateResponder(box[_COMMAND])
        if found is None:
            result: Any = fail(amp.RemoteAmpError(
                amp.UNHANDLED_ERROR_CODE, f"Unhandled Command: {box[_COMMAND]!r}", False,
                local=Failure(amp.UnhandledCommand()),
            ))
        else:
            try:
                result = found(box)
            except BaseException:
                result = fail()
        if not isinstance(result, Deferred):
            if ask is not None:
                self._answer(result, ask)
            return
        if ask is None:
            result.addErrback(self.unhandledError)
        else:
            # One pair of callbacks; each hands its own failures to unhandledError.
            result.addCallbacks(self._answer, self._answer_error, callbackArgs=(ask,), errbackArgs=(ask,))

    def responderFailed(self, failure: Failure, command: bytes) -> Failure:  # noqa: N802 - AMP's style
        """A responder failed with an error its command does not declare: what to answer.

        Twisted's answer (kept here) is an unknown error that ends the connection; a
        subclass may turn the failure into a declared error instead.
        """
        return failure

    def _answer(self, answer: amp.AmpBox, ask: bytes) -> None:
        try:
            answer[_ANSWER] = ask
            self._emit(answer)
        except BaseException:
            self.unhandledError(Failure())

    def _answer_error(self, failure: Failure, ask: bytes) -> None:
        try:
            self._emit(_error_box(failure, ask))
        except BaseException:
            self.unhandledError(Failure())

    def _emit(self, box: amp.AmpBox) -> None:
        """Send an answer; a QuitBox closes the connection after it (as its own send does)."""
        try:
            self.sendBox(box)
        except amp.ConnectionLost:
            return
        if isinstance(box, amp.QuitBox) and self.transport is not None:
            self.transport.loseConnection()

    # --- asking --------------------------------------------------------------------------------

    def sendBox(self, box: amp.AmpBox) -> None:
        """Write one box (BinaryBoxProtocol.sendBox's check, a faster serialiser)."""
        if self.transport is None:
            raise amp.ConnectionLost()
        self.transport.write(serialize(box))

    def _question(self, tag: bytes) -> Deferred | None:
        """The question ``tag`` answers; None (and the connection dropped, as Twisted drops it,
        but with one warning instead of a KeyError's traceback) when we never asked it."""
        question = (self._questions or {}).pop(tag, None)
        if question is None:
            _log.warn("dropping a connection that answered a question never asked ({tag!r})", tag=tag[:64])
            if self.transport is not None:
                self.transport.loseConnection()
        return question

    def _ask(self, name: bytes, box: amp.AmpBox, requires_answer: bool) -> Deferred | None:
        """Send a command box with a new tag; the Deferred of its answer box (None: no answer asked)."""
        if self._no_more is not None:
            return fail(self._no_more) if requires_answer else None
        box[_COMMAND] = name
        self._asked += 1
        tag = b"%x" % self._asked
        if requires_answer:
            box[_ASK] = tag
        self.sendBox(box)
        if not requires_answer:
            return None
        if self._questions is None:
            self._questions = {}
        question = self._questions[tag] = Deferred()
        return question

    def callRemoteString(self, command: bytes, requiresAnswer: bool = True, **kw: Any) -> Deferred | None:  # noqa: N802, N803
        """Send a command of raw strings (Twisted's low-level call); fires with the answer box."""
        return self._ask(command, amp.AmpBox(kw), requiresAnswer)

    def callRemote(self, commandType: type[amp.Command], *a: Any, **kw: Any) -> Deferred | None:  # noqa: N802, N803
        """Call a command on the other side: fires with its parsed answer or its declared error."""
        compiled = schemas(commandType)
        try:
            if a:
                raise amp.InvalidSignature("positional arguments (protocol switching) are not supported")
            unknown = kw.keys() - compiled.arguments.names
            if unknown:
                raise amp.InvalidSignature(f"{sorted(unknown)[0]} is not a valid argument")
            forgotten = [name for name in compiled.arguments.required if name not in kw]
            if forgotten:  # Twisted's Command() says the same
                raise amp.InvalidSignature(f"forgot {', '.join(forgotten)} for {commandType.commandName}")
            box = compiled.arguments.build(kw, self, Box())
        except BaseException:
            return fail()
        d = self._ask(commandType.commandName, box, commandType.requiresAnswer)
        if d is None:
            return None
        return d.addCallbacks(compiled.response.parse, compiled.remote_error, callbackArgs=(self,))

    def stopReceivingBoxes(self, reason: Failure) -> None:  # noqa: N802 - IBoxReceiver's name
        """The connection is gone: every question still open fails with ``reason``."""
        self.failAllOutgoing(reason)

    def failAllOutgoing(self, reason: Failure) -> None:  # noqa: N802 - BoxDispatcher's name
        """Fail every open question with ``reason``; later calls fail with it at once."""
        self._no_more = reason
        questions, self._questions = self._questions or {}, None
        for question in questions.values():
            question.errback(reason)


def _remote_error(box: amp.AmpBox) -> Failure:
    """An error answer as Twisted's BoxDispatcher reads it (protocol errors by their code)."""
    code = box[amp.ERROR_CODE]
    description = box[amp.ERROR_DESCRIPTION]
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    error_type = amp.PROTOCOL_ERRORS.get(code)
    return Failure(error_type(code, description) if error_type is not None else amp.RemoteAmpError(code, description))
