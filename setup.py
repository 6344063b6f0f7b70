from setuptools import find_packages, setup

setup(
    name="tpot",
    version="0.3.0",
    description="Transport Packets over Tunnels: a self-hosted tunnel server and client (TPoT/1).",
    packages=find_packages(include=["tpot", "tpot.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["tpot_plugin.py"]},
    python_requires=">=3.9",
    install_requires=[
        "twisted[tls]>=23.10",
        "autobahn>=23.1",
        "python-dotenv>=1.0",
        "prometheus-client>=0.17",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-twisted>=1.14", "pytest-timeout>=2", "hypothesis>=6"],
    },
    entry_points={"console_scripts": ["tpot = tpot.client.cli:main"]},
)
