"""A fault-injecting HTTP proxy on loopback, for the object-store tests: a child process that
forwards requests to an upstream server (moto's S3) and breaks some of them on purpose.

    python -m tests.fault_proxy --port P --upstream PORT [--reset_first TEXT]...
                                [--reset_always TEXT]... [--status_first CODE:TEXT]...

Each client connection carries one request (the proxy asks both sides for
``Connection: close``). A GET whose request line contains TEXT is broken as asked: the first
such request (per TEXT) is answered with a TCP reset (``--reset_first``) or with an HTTP error
status such as 503 Slow Down (``--status_first``), and every such request with a reset
(``--reset_always``). Everything else is forwarded untouched. Each fault is logged to stdout as
``fault <kind> <request line>``. It serves until it is killed (the tests stop it by process id).
"""

import argparse
import socket
import struct
import sys
import threading


def _read_head(sock: socket.socket) -> bytes:
  data = b''
  while b'\r\n\r\n' not in data:
    chunk = sock.recv(65536)
    if not chunk:
      break
    data += chunk
  return data


def _reset(sock: socket.socket) -> None:
  """Closes with RST (SO_LINGER 0), as a dropped connection looks to the client."""
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
  sock.close()


def _with_connection_close(head: bytes) -> bytes:
  lines = head.split(b'\r\n')
  kept = [line for line in lines[1:] if not line.lower().startswith(b'connection:')]
  return b'\r\n'.join([lines[0], b'Connection: close', *kept])


class Proxy:
  """The proxy's rules and the state of the one-time faults."""

  def __init__(self, upstream: int, reset_first, reset_always, status_first):
    self.upstream = upstream
    self.pending_resets = list(reset_first)
    self.reset_always = list(reset_always)
    self.pending_status = [tuple(rule.split(':', 1)) for rule in status_first]
    self.lock = threading.Lock()

  def _fault(self, request_line: str):
    if not request_line.startswith('GET '):
      return None
    with self.lock:
      if any(text in request_line for text in self.reset_always):
        return 'reset'
      for text in self.pending_resets:
        if text in request_line:
          self.pending_resets.remove(text)
          return 'reset'
      for code, text in self.pending_status:
        if text in request_line:
          self.pending_status.remove((code, text))
          return code
    return None

  def handle(self, client: socket.socket) -> None:
    head = _read_head(client)
    if not head:
      client.close()
      return
    request_line = head.split(b'\r\n', 1)[0].decode('latin-1')
    fault = self._fault(request_line)
    if fault is not None:
      print(f'fault {fault} {request_line}', flush=True)
      if fault == 'reset':
        _reset(client)
      else:
        client.sendall(f'HTTP/1.1 {fault} Injected\r\nContent-Length: 0\r\n'
                       'Connection: close\r\n\r\n'.encode())
        client.close()
      return
    upstream = socket.create_connection(('127.0.0.1', self.upstream))
    upstream.sendall(_with_connection_close(head))

    def pump(source, target):
      try:
        while True:
          chunk = source.recv(65536)
          if not chunk:
            break
          target.sendall(chunk)
      except OSError:  # the other side went away: nothing left to forward
        pass
      finally:
        try:
          target.shutdown(socket.SHUT_WR)
        except OSError:  # already closed
          pass

    to_upstream = threading.Thread(target=pump, args=(client, upstream), daemon=True)
    to_upstream.start()
    pump(upstream, client)
    to_upstream.join(timeout=5)
    upstream.close()
    client.close()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--port', type=int, required=True)
  parser.add_argument('--upstream', type=int, required=True)
  parser.add_argument('--reset_first', action='append', default=[])
  parser.add_argument('--reset_always', action='append', default=[])
  parser.add_argument('--status_first', action='append', default=[])
  args = parser.parse_args(argv)
  proxy = Proxy(args.upstream, args.reset_first, args.reset_always, args.status_first)
  server = socket.socket()
  server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  server.bind(('127.0.0.1', args.port))
  server.listen(64)
  print(f'listening on {args.port}', flush=True)
  while True:
    client, _ = server.accept()
    threading.Thread(target=proxy.handle, args=(client,), daemon=True).start()


if __name__ == '__main__':
  sys.exit(main())
