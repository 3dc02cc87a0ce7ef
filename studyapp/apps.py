from django.apps import AppConfig


class StudyAppConfig(AppConfig):
    name = "studyapp"
    verbose_name = "Interpretability studies"
    default_auto_field = "django.db.models.BigAutoField"
