"""A TCP proxy between the web app and PostgreSQL, so a test can take the database away and give it
back without touching the server that other runs share: drop every connection and refuse new ones (a
restart), accept and never answer (a server that cannot be reached), drop and keep accepting (a
restart too quick for anyone to notice but the connections it broke), and hold back PostgreSQL's
replies one statement at a time (to catch a web worker between a commit and its reply).

Threads and blocking sockets. The proxy reads PostgreSQL's side of the protocol, so the web app must
connect with sslmode=disable&gssencmode=disable."""
import contextlib
import socket
import struct
import threading

from .stack import free_port


def _close(sock):
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class _Link:
    """One client connection and its upstream twin, pumped by two threads."""

    def __init__(self, proxy, client, upstream):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self._replies = b""

    def start(self):
        threading.Thread(target=self._pump_requests, daemon=True).start()
        threading.Thread(target=self._pump_replies, daemon=True).start()

    def _pump_requests(self):
        try:
            while data := self.client.recv(65536):
                self.upstream.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def _pump_replies(self):
        try:
            while data := self.upstream.recv(65536):
                self._replies += data
                self._forward_replies()
        except OSError:
            pass
        finally:
            self.close()

    def _forward_replies(self):
        """Forward whole messages; stop before each ReadyForQuery while the proxy holds replies. PostgreSQL
        sends ReadyForQuery after all of a statement's work, its commit included, and the client sends
        nothing more until it has it."""
        ready = 0
        while len(self._replies) >= ready + 5:
            kind, length = self._replies[ready:ready + 1], struct.unpack("!I", self._replies[ready + 1:ready + 5])[0]
            if len(self._replies) < ready + 1 + length:
                break
            if kind == b"Z" and self.proxy.holding:
                self.client.sendall(self._replies[:ready])
                self._replies = self._replies[ready:]
                ready = 0
                if not self.proxy._hold(self):
                    return
            ready += 1 + length
        self.client.sendall(self._replies[:ready])
        self._replies = self._replies[ready:]

    def close(self):
        if self.closed.is_set():
            return
        self.closed.set()
        _close(self.client)
        _close(self.upstream)
        self.proxy._forget(self)


class TcpProxy:
    def __init__(self, upstream_host, upstream_port):
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.links = set()
        self.opened = 0  # upstream connections made so far
        self.holding = False
        self._held = None  # the link whose reply waits for `release_reply`
        self._state = threading.Condition()
        self._listener = None
        self._hanging = []

    # -- modes ----------------------------------------------------------------------------------
    def start(self):
        self._listen("forward")
        return self

    def cut(self):
        """Drop every connection and refuse new ones, as a PostgreSQL that is restarting."""
        self._stop_listening()
        self.drop()

    def hang(self):
        """Accept connections and never answer, as a server behind a dead route."""
        self.cut()
        self._listen("hang")

    def restore(self):
        self._stop_listening()
        for sock in self._hanging:
            _close(sock)
        self._hanging.clear()
        self._listen("forward")

    def drop(self):
        """Drop every proxied connection; new ones are accepted as before."""
        with self._state:
            links = list(self.links)
        for link in links:
            link.close()

    def close(self):
        self.stop_holding()
        self.cut()
        for sock in self._hanging:
            _close(sock)

    @property
    def active(self):
        with self._state:
            return len(self.links)

    # -- replies one statement at a time -----------------------------------------------------------
    def hold_replies(self):
        """From now on every ReadyForQuery waits for `release_reply`: the client stands still after each
        statement PostgreSQL has finished, while the test looks at the database."""
        with self._state:
            self.holding = True

    def wait_for_held_reply(self, timeout):
        with self._state:
            if not self._state.wait_for(lambda: self._held is not None, timeout):
                raise AssertionError(f"PostgreSQL answered nothing through the proxy within {timeout} s")
            return self._held

    def release_reply(self):
        with self._state:
            self._held = None
            self._state.notify_all()

    def stop_holding(self):
        with self._state:
            self.holding = False
            self._held = None
            self._state.notify_all()

    def _hold(self, link):
        """In `link`'s reply thread: wait until the test releases the reply; False if the link closed."""
        with self._state:
            self._state.wait_for(lambda: self._held is None or not self.holding or link.closed.is_set())
            if not self.holding or link.closed.is_set():
                return not link.closed.is_set()
            self._held = link
            self._state.notify_all()
            self._state.wait_for(lambda: self._held is not link or link.closed.is_set())
            return not link.closed.is_set()

    # -- plumbing ----------------------------------------------------------------------------------
    def _listen(self, mode):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener, mode), daemon=True).start()

    def _stop_listening(self):
        if self._listener is not None:
            _close(self._listener)  # shutdown() wakes the thread blocked in accept()
            self._listener = None

    def _accept(self, listener, mode):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if mode == "hang":
                self._hanging.append(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            link = _Link(self, client, upstream)
            with self._state:
                self.links.add(link)
                self.opened += 1
            link.start()

    def _forget(self, link):
        with self._state:
            self.links.discard(link)
            self._state.notify_all()  # a reply thread waiting in _hold sees its link closed
