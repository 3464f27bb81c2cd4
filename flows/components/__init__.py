"""The component registry: every node a flow may contain is a class written here."""
