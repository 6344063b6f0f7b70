from setuptools import find_packages, setup

# The lowest versions below are tested (`make test-lowest`, constraints-lowest.txt pins them);
# Autobahn is capped at the major version tested, since tpot.protocol.frames relies on its
# internals (frames.AUTOBAHN_NAMES).  The distribution is tpot-tunnel ("tpot" on PyPI is
# another project); the import package and the commands are `tpot`.
setup(
    name="tpot-tunnel",
    version="0.3.0",
    description="Transport Packets over Tunnels: a self-hosted tunnel server and client (TPoT/1).",
    packages=find_packages(include=["tpot", "tpot.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["tpot_plugin.py"], "tpot.client.inspector": ["static/*"]},
    python_requires=">=3.11",
    install_requires=[
        "twisted[tls]>=26.4",
        "autobahn>=25.9.1,<27",
        "python-dotenv>=1.0",
        "prometheus-client>=0.17",
        "txredisapi>=1.6",
        "PyYAML>=6",
        "rich>=13",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-twisted>=1.14", "pytest-timeout>=2", "hypothesis>=6", "kubernetes-validate>=1.28",
                 "playwright>=1.40", "cryptography>=3.3"],
    },
    entry_points={"console_scripts": ["tpot = tpot.client.cli:main"]},
)
