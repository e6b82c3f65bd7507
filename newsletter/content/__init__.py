"""What a bulletin says and how it looks: its types, the text/Markdown file formats, Markdown to safe HTML
and wrapped text, regions, storing bulletins, editing their items (`items`: the rules both doors share,
including "a bulletin without items cannot be sent"), and rendering one responsive email per region set
(placeholders where each recipient's values go). Its SQL lives in `queries`.

May import: `core`.
"""
