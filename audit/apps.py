from django.apps import AppConfig


class AuditConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from audit import chain, db, services

        chain.connect()
        db.connect()
        user_logged_in.connect(services._on_sign_in, dispatch_uid="audit-sign-in")
