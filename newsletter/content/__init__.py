"""What a bulletin says and how it looks: its types, the text/Markdown file formats, Markdown to safe HTML
and wrapped text, regions, storing bulletins and their items, and rendering one responsive email per
region set (placeholders where each recipient's values go).

May import: `core`.
"""
