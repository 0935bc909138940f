"""rat_langchain."""
