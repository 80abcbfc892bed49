#!/bin/sh
# PID 1 of a lab host (lab/hosts.py): a machine of its own, with its own dockerd (unless LAB_DOCKERD=0,
# as on the bastion), disk (a volume on /var/lib/docker) and sshd. The deploy user gets
# LAB_AUTHORIZED_KEYS; sshd gets host keys of its own, made on first start.
set -eu
id deploy >/dev/null 2>&1 || useradd --create-home --shell /bin/sh deploy
usermod --password '*' deploy  # a locked password ('!') makes sshd refuse key logins without PAM
if getent group docker >/dev/null; then usermod -aG docker deploy; fi
install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
printf '%s\n' "${LAB_AUTHORIZED_KEYS:-}" > /home/deploy/.ssh/authorized_keys
chown deploy:deploy /home/deploy/.ssh/authorized_keys
chmod 0600 /home/deploy/.ssh/authorized_keys
install -d -o deploy -g deploy /home/deploy/apps
git config --system safe.directory '*'
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
if [ "${LAB_DOCKERD:-1}" = 1 ]; then
  dockerd --cgroup-parent="/bluegreen-lab-$(hostname)" >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd.log >&2; exit 1; }
fi
/usr/sbin/sshd -D -e &
touch /run/lab-ready
wait
