"""The data plane of services: gateway tunnels, the router and the metric plane."""
