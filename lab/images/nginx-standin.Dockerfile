# Test-only stand-in for nginx:1.27-alpine (no registry is reachable here): Debian's nginx, laid out
# as the official image is, so the starter app (examples/starter) runs unchanged: conf.d/*.conf is
# the site, no default site, nginx in the foreground.
FROM bluegreen-lab/debian:bookworm
LABEL bluegreen-lab.stand-in="1"
RUN rm -f /etc/nginx/sites-enabled/default
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
