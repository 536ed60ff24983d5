"""The commands of `prunekit`, one module each (as transformers' `commands/`): each registers its parser with
`register(sub)` and sets its function; the flag tables they share are in `flags`, what they do alike in `common`."""
