# The local stack's S3-compatible server in place of MinIO (which cannot be pulled here): moto's S3 and IAM with
# authentication on (docker/local/s3server.py), and an `mc` for the init job and the healthcheck (docker/local/mc).
# Started with MinIO's own command line (`server /data --console-address ":9001"`).
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY s3server.py /opt/s3/s3server.py
COPY mc /usr/local/bin/mc
RUN useradd --create-home --uid 10002 s3 && chmod 755 /usr/local/bin/mc
USER s3
EXPOSE 9000
ENTRYPOINT ["python", "/opt/s3/s3server.py"]
CMD ["server", "/data"]
