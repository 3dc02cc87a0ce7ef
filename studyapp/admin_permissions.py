"""Admin pages of rows that only the platform writes: a researcher may look, never add or edit.

Shared by admin.py and admin_prolific.py (which neither import the other): units come from a stimulus
job's artifact, answers from participants, the change log from the models' save, Prolific actions from
the Prolific client; a hand-made or hand-edited row would claim what no one did."""


class NoAddOrChange:
    """Model admin (or inline) mixin: rows are viewed, and deleted where the admin allows it."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ViewOnly(NoAddOrChange):
    """Model admin mixin for a record kept whole: no add, change or delete (a log, an audit trail)."""

    def has_delete_permission(self, request, obj=None):
        return False
