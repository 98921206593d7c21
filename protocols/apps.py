from django.apps import AppConfig


class ProtocolsConfig(AppConfig):
    name = "protocols"
    verbose_name = "Protocols and treatment"

    def ready(self) -> None:
        # Patient weights are checked against the protocols' weight limits (SPEC §P1);
        # patients sits below protocols, so protocols hands it the lookup.
        from patients.services import register_weight_limits
        from protocols.selectors import weight_limits_in_force

        register_weight_limits(weight_limits_in_force)
