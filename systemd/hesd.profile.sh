export HESD_CONFIG=/etc/hesd/hesd.toml
