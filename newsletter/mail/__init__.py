"""One recipient's message: signed link tokens, the links built from them, and the RFC 5322 message
(headers that subscriber data can never forge, List-Unsubscribe one-click, multipart/alternative).

May import: `core`, `content`.
"""
