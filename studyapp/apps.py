from django.apps import AppConfig


class StudyAppConfig(AppConfig):
    name = "studyapp"
    verbose_name = "Interpretability studies"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.contrib import admin

        # django-axes counts the failed sign-ins (settings' AXES_*); the form says why a lockout refuses.
        from . import checks, lockout  # noqa: F401

        admin.site.login_form = lockout.LockoutAdminAuthenticationForm
        # The Prolific settings, the search by recruitment id and the withdrawal action extend the classes
        # admin.py registered (the admin app, listed first, has discovered it by now).
        from . import admin_prolific  # noqa: F401
