"""Let peers with RSA DTLS certificates in: aiortc offers only ECDSA cipher suites.

In DTLS the cipher suite's signature algorithm follows the *server's*
certificate.  aiortc (1.16) lists only ``ECDHE-ECDSA-*`` suites, which is
fine when it is the DTLS server or the peer is a browser (ECDSA
certificates), but when aiortc is the client of a peer whose certificate is
RSA -- GStreamer's webrtcbin, for one -- no suite is common and the handshake
dies with "Fatal SSL error".  Adding the ECDHE-RSA equivalents fixes it
without weakening anything (forward-secret AEAD/AES suites only).
"""

from __future__ import annotations

from aiortc.rtcdtlstransport import RTCCertificate

RSA_SUITES = b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
_original = RTCCertificate._create_ssl_context


def accept_rsa_peers() -> None:
    """Idempotent; process-wide (every DTLS handshake started afterwards)."""
    if getattr(RTCCertificate._create_ssl_context, "_livesafe", False):
        return

    def create_ssl_context(self, srtp_profiles):  # type: ignore[no-untyped-def]
        context = _original(self, srtp_profiles)
        context.set_cipher_list(
            b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
            + RSA_SUITES
        )
        return context

    create_ssl_context._livesafe = True  # type: ignore[attr-defined]
    RTCCertificate._create_ssl_context = create_ssl_context  # type: ignore[method-assign]
