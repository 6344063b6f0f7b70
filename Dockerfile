# Build wheels in one stage, install them in a slim runtime stage as a non-root user.
# Configured like the original image: docker run -d -p 3000:3000 -e DOMAIN=example.com IMAGE
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.py README.md ./
COPY tpot ./tpot
COPY twisted ./twisted
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PORT=3000
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /tmp
EXPOSE 3000
# --pidfile= : a stale pid file would otherwise stop a restarted container.
CMD ["twistd", "-n", "--pidfile=", "tpot"]
