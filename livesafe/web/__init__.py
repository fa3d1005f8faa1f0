"""Pages the relay serves (plain HTML and JavaScript: no build step)."""
