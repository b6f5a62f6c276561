"""Errors that reach the user: each says what was expected and what arrived."""


class InvalidInputError(ValueError):
    """Bad input from a user (file, data set, config). Pages show it with st.error."""


class WorkspaceNotWritable(InvalidInputError):
    """LENSCAPE_HOME cannot be written: nothing can be trained, imported or cached."""


class DataUnavailableError(InvalidInputError):
    """A data set's files are missing and cannot be downloaded here."""


class WorkspaceDamaged(WorkspaceNotWritable):
    """A file of the workspace that Lenscape must read (the job index) is damaged: said with what to do."""
