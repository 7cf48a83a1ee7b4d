# One image for web, workers and beat (docker-compose.yml). The build worker builds images with buildah (vfs
# storage, chroot isolation: no runc, crun or fuse-overlayfs needed), each build confined by util-linux's
# `setpriv` and `unshare` and its mounts removed with `umount` (package mount); skopeo and umoci for images;
# slirp4netns and nftables for the `filtered` build network (WAVE_BUILD_NETWORK, the default).
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends buildah skopeo umoci util-linux mount git ca-certificates \
    slirp4netns nftables \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

ENV PYTHONUNBUFFERED=1 \
    WAVE_DATA_DIR=/data \
    STORAGE_DRIVER=vfs \
    BUILDAH_ISOLATION=chroot
EXPOSE 9090
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py ensure_admin && exec python -m uvicorn wave_site.asgi:application --host 0.0.0.0 --port 9090 --workers 2 --lifespan off --no-server-header ${WAVE_TRUSTED_PROXIES:+--forwarded-allow-ips=$WAVE_TRUSTED_PROXIES} $([ -n \"$WAVE_TRUSTED_PROXIES\" ] || echo --no-proxy-headers)"]
