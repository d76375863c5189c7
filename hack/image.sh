#!/usr/bin/env bash
# The operator's container image without a container engine: the image the
# Dockerfile describes, built with buildah (FROM scratch, no RUN step) into an
# OCI archive, and optionally checked by running it, unpacked, as the chart
# runs it in a pod.
#
#   hack/image.sh [--binary PATH] [--output PATH] [--verify | --verify-only]
#
#   --binary PATH  package this (static) binary instead of building one
#   --output PATH  the OCI archive
#                  (default target/image/tenant-capacity-operator-<version>.oci.tar)
#   --verify       after building, check the archive on the local cluster
#   --verify-only  check an archive built before (--output) without building
#
# Build: `cargo build --locked --release --target <arch>-unknown-linux-musl`
# (the Dockerfile's static binary; the Rust target is added with rustup when
# missing, musl-gcc compiles ring's C parts), then the Dockerfile's final
# stage is carried out with buildah: its LABEL, ENV, COPY, USER, EXPOSE,
# ENTRYPOINT and CMD lines are read from the Dockerfile itself, so the two
# cannot drift apart (any other instruction there is refused). `COPY
# --from=builder` sources are this machine's: the binary for /out/<name>, the
# same path otherwise (Debian's CA bundle). Prints the archive's size and the
# unpacked size.
#
# Verify (needs a cluster: KUBECONFIG, or else the local one, which must be
# up): unpack the archive (skopeo, umoci); compare its configuration with the
# Dockerfile and its exposed ports with the chart's container ports; check it
# holds exactly the copied files; build the Dockerfile's final stage with
# `buildah bud` (the build stage stood in for by the binary and CA bundle just
# unpacked) and compare files and configuration; run `<entrypoint> --version`
# chrooted as the image's user. Then, in namespaces img-<id>-ops and img-<id>-tenant, apply
# the chart's ServiceAccount and RBAC (helm template), write a token of that
# ServiceAccount, the cluster CA and the namespace where the kubelet mounts
# them, and start the entrypoint chrooted as the image's user, with a pod's
# environment only and the chart's Deployment arguments (bind addresses moved
# to 127.0.0.1:0). It must answer /readyz, run as uid/gid 65532 without
# capabilities, serve /metrics over HTTPS to metrics readers only, bring a
# TenantSubscription to Ready and export its capacity, and exit 0 on SIGTERM.
# Everything it made is deleted again (missing CRDs are installed and left).
# Each wait polls, for at most TCO_IMAGE_TIMEOUT seconds (120).
#
# Needs buildah, skopeo, umoci, jq, curl, musl-gcc (hack/prerequisites.sh
# installs them); runs as root (buildah's vfs storage, chroot).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

NAME="tenant-capacity-operator"
DOCKERFILE="${ROOT}/Dockerfile"
CHART="${ROOT}/charts/${NAME}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
ARCH="$(uname -m)"
TARGET="${ARCH}-unknown-linux-musl"
TIMEOUT="${TCO_IMAGE_TIMEOUT:-120}" # seconds each wait of --verify may take

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
need() {
  local c
  for c in "$@"; do
    command -v "${c}" >/dev/null 2>&1 || die "${c} is missing (hack/prerequisites.sh installs it)"
  done
}
human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }

binary="" output="" build=1 verify=0
while (($#)); do
  case "$1" in
    --binary) binary="$(realpath "${2:?--binary needs a path}")"; shift 2 ;;
    --output) output="$(realpath -m "${2:?--output needs a path}")"; shift 2 ;;
    --verify) verify=1; shift ;;
    --verify-only) verify=1 build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see $0 --help)" ;;
  esac
done
[[ -n "${VERSION}" ]] || die "no version in Cargo.toml"
output="${output:-${ROOT}/target/image/${NAME}-${VERSION}.oci.tar}"
[[ "$(id -u)" == 0 ]] || die "run as root (buildah's vfs storage, chroot)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tco-image.XXXXXX")"
# buildah with storage of its own, removed with ${WORK}.
BUILDAH=(buildah --root "${WORK}/storage" --runroot "${WORK}/run" --storage-driver vfs)
CLEANUPS=()
cleanup() {
  local rc=$? i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[i]}" || true; done
  rm -rf "${WORK}"
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# The Dockerfile's final stage, as lists the build and the checks share.

ARG_NAMES=() ARG_VALUES=() LABELS=() ENVS=() COPIES=() USER_SPEC="" PORTS=() ENTRYPOINT="" CMD=""

substitute() { # text -> text with ${ARG} and $ARG replaced by the ARG defaults
  local s="$1" i
  for i in "${!ARG_NAMES[@]}"; do
    s="${s//\$\{${ARG_NAMES[i]}\}/${ARG_VALUES[i]}}"
    s="${s//\$${ARG_NAMES[i]}/${ARG_VALUES[i]}}"
  done
  printf '%s' "${s}"
}

read_dockerfile() {
  [[ -f "${DOCKERFILE}" ]] || die "no ${DOCKERFILE}"
  local last joined="" line lines=() instr rest kv
  last="$(grep -n -i '^FROM[[:space:]]' "${DOCKERFILE}" | tail -n1 | cut -d: -f1)"
  [[ -n "${last}" ]] || die "no FROM in ${DOCKERFILE}"
  # Logical lines of the final stage: continuations joined, comments dropped.
  while IFS= read -r line; do
    [[ "${line}" =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ "${line}" == *\\ ]]; then joined+="${line%\\} "; continue; fi
    lines+=("${joined}${line}")
    joined=""
  done < <(tail -n "+${last}" "${DOCKERFILE}")
  for line in "${lines[@]}"; do
    instr="${line%%[[:space:]]*}" rest="${line#"${instr}"}"
    rest="${rest#"${rest%%[![:space:]]*}"}"
    case "${instr^^}" in
      FROM) [[ "${rest}" == scratch ]] || die "the Dockerfile's final stage is FROM ${rest}; hack/image.sh builds FROM scratch only" ;;
      ARG)
        [[ "${rest}" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || die "Dockerfile: ARG without a default: ${line}"
        ARG_NAMES+=("${BASH_REMATCH[1]}") ARG_VALUES+=("${BASH_REMATCH[2]}")
        ;;
      LABEL | ENV)
        while [[ "${rest}" =~ ^([A-Za-z0-9._-]+)=(\"([^\"]*)\"|([^[:space:]\"]*))[[:space:]]*(.*)$ ]]; do
          kv="${BASH_REMATCH[1]}=$(substitute "${BASH_REMATCH[3]}${BASH_REMATCH[4]}")"
          if [[ "${instr^^}" == LABEL ]]; then LABELS+=("${kv}"); else ENVS+=("${kv}"); fi
          rest="${BASH_REMATCH[5]}"
        done
        [[ -z "${rest}" ]] || die "Dockerfile: cannot read '${rest}' in: ${line}"
        ;;
      COPY) COPIES+=("${rest}") ;;
      USER) USER_SPEC="${rest}" ;;
      EXPOSE) read -r -a PORTS <<<"${rest}" ;;
      ENTRYPOINT) ENTRYPOINT="${rest}" ;;
      CMD) CMD="${rest}" ;;
      *) die "the Dockerfile's final stage has '${instr}', which hack/image.sh does not carry out: teach it, or keep the stage to FROM scratch, ARG, LABEL, ENV, COPY, USER, EXPOSE, ENTRYPOINT, CMD" ;;
    esac
  done
  [[ "${ENTRYPOINT}" == \[* && "${CMD}" == \[* ]] || die "Dockerfile: ENTRYPOINT and CMD must be JSON arrays"
  [[ "${USER_SPEC}" =~ ^[0-9]+:[0-9]+$ ]] || die "Dockerfile: USER must be numeric uid:gid (runAsNonRoot checks a number), not '${USER_SPEC}'"
  [[ "${USER_SPEC%%:*}" != 0 ]] || die "Dockerfile: USER ${USER_SPEC} is root; the chart runs the image with runAsNonRoot"
  local i
  for i in "${!ARG_NAMES[@]}"; do
    if [[ "${ARG_NAMES[i]}" == VERSION && "${ARG_VALUES[i]}" != "${VERSION}" ]]; then
      die "Dockerfile: ARG VERSION=${ARG_VALUES[i]}, but Cargo.toml's version is ${VERSION}"
    fi
  done
}

# COPY [--from=builder] [--chown=U:G] [--chmod=MODE] SRC DEST: one source.
# Sets copy_from, copy_word (SRC), copy_src (SRC on this machine), copy_dest,
# copy_chown, copy_chmod.
parse_copy() {
  local words w from=""
  read -r -a words <<<"$1"
  copy_chown="" copy_chmod=""
  while [[ "${words[0]}" == --* ]]; do
    w="${words[0]}" words=("${words[@]:1}")
    case "${w}" in
      --from=*) from="${w#--from=}" ;;
      --chown=*) copy_chown="${w#--chown=}" ;;
      --chmod=*) copy_chmod="${w#--chmod=}" ;;
      *) die "Dockerfile: COPY option ${w} is not supported by hack/image.sh" ;;
    esac
  done
  ((${#words[@]} == 2)) || die "Dockerfile: COPY with one source and one destination only: COPY $1"
  copy_from="${from}" copy_word="${words[0]}" copy_dest="${words[1]}"
  case "${from}" in
    "") copy_src="${ROOT}/${words[0]}" ;;
    builder)
      if [[ "${words[0]}" == "/out/${NAME}" ]]; then copy_src="${binary:-(the binary)}"; else copy_src="${words[0]}"; fi
      ;;
    *) die "Dockerfile: COPY --from=${from} is not supported by hack/image.sh" ;;
  esac
}

# ---------------------------------------------------------------------------
# Build.

build_binary() {
  need cargo musl-gcc
  if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "${TARGET}"; then
    log "adding the Rust target ${TARGET}"
    rustup target add "${TARGET}" || die "rustup target add ${TARGET} failed; build a static binary elsewhere and pass --binary"
  fi
  log "cargo build --locked --release --target ${TARGET} --bin ${NAME}"
  local start=${SECONDS} cc_var="CC_${TARGET//-/_}"
  env "${cc_var}=musl-gcc" cargo build --locked --release --target "${TARGET}" --bin "${NAME}" \
    || die "cargo build for ${TARGET} failed"
  binary="${ROOT}/target/${TARGET}/release/${NAME}"
  log "binary built in $((SECONDS - start))s"
}

is_static() { # an ELF executable without an interpreter (no dynamic loader)
  readelf -h "$1" >/dev/null 2>&1 && ! readelf -l "$1" 2>/dev/null | grep -q 'INTERP'
}

build_image() {
  need buildah readelf numfmt
  local start=${SECONDS}
  [[ -n "${binary}" ]] || build_binary
  [[ -x "${binary}" ]] || die "no executable ${binary}"
  is_static "${binary}" || die "${binary} is linked dynamically; the image has no libc or loader: build it for ${TARGET} (the default) or pass a static --binary"
  local got
  got="$("${binary}" --version)" || die "${binary} --version failed"
  [[ "${got}" == "${NAME} ${VERSION}" ]] || die "${binary} says '${got}', Cargo.toml says ${VERSION}"

  local image_start=${SECONDS} c spec
  c="$("${BUILDAH[@]}" from --quiet scratch)" || die "buildah from scratch failed"
  CLEANUPS+=("${BUILDAH[*]@Q} rm ${c@Q} >/dev/null")
  for spec in "${COPIES[@]}"; do
    parse_copy "${spec}"
    [[ -f "${copy_src}" ]] || die "COPY ${spec}: no file ${copy_src} on this machine"
    local -a opts=()
    [[ -n "${copy_chown}" ]] && opts+=(--chown "${copy_chown}")
    [[ -n "${copy_chmod}" ]] && opts+=(--chmod "${copy_chmod}")
    "${BUILDAH[@]}" copy --quiet "${opts[@]}" "${c}" "${copy_src}" "${copy_dest}" >/dev/null \
      || die "buildah copy ${copy_src} ${copy_dest} failed"
  done
  local -a cfg=(--user "${USER_SPEC}" --entrypoint "${ENTRYPOINT}" --cmd "${CMD}"
    --os linux --arch "$(go_arch)" --created-by "hack/image.sh (Dockerfile's final stage)")
  local kv p
  for kv in "${LABELS[@]}"; do cfg+=(--label "${kv}"); done
  for kv in "${ENVS[@]}"; do cfg+=(--env "${kv}"); done
  for p in "${PORTS[@]}"; do [[ "${p}" == */* ]] || p+=/tcp; cfg+=(--port "${p}"); done
  "${BUILDAH[@]}" config "${cfg[@]}" "${c}" || die "buildah config failed"
  # The last commit's time, so that a rebuild of the same sources gives the
  # same layer and configuration.
  local epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
  mkdir -p "$(dirname "${output}")"
  rm -f "${output}"
  "${BUILDAH[@]}" commit --quiet --format oci --identity-label=false --disable-compression=false \
    --timestamp "${epoch}" "${c}" "oci-archive:${output}:${VERSION}" >/dev/null \
    || die "buildah commit to ${output} failed"
  log "image built in $((SECONDS - image_start))s (with the binary: $((SECONDS - start))s): ${output}"
  log "binary $(human "$(stat -c %s "${binary}")"), archive (gzip layer) $(human "$(stat -c %s "${output}")")"
}

go_arch() {
  case "${ARCH}" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) echo "${ARCH}" ;;
  esac
}

# ---------------------------------------------------------------------------
# Verify.

ROOTFS="" SA_DIR=/var/run/secrets/kubernetes.io/serviceaccount

unpack() {
  need skopeo umoci jq
  [[ -f "${output}" ]] || die "no archive ${output} (build it first: hack/image.sh)"
  skopeo copy --quiet "oci-archive:${output}:${VERSION}" "oci:${WORK}/oci:${VERSION}" \
    || die "skopeo could not read ${output} as an OCI archive tagged ${VERSION}"
  umoci unpack --image "${WORK}/oci:${VERSION}" "${WORK}/bundle" >/dev/null \
    || die "umoci could not unpack ${output}"
  ROOTFS="${WORK}/bundle/rootfs"
  log "unpacked: $(human "$(du -sb "${ROOTFS}" | cut -f1)") in $(find "${ROOTFS}" -type f | wc -l) files"
}

check_config() {
  local config want got kv p
  config="$(skopeo inspect --config "oci-archive:${output}:${VERSION}")" || die "skopeo inspect --config failed"
  expect_json() { # what jq-filter wanted-json
    got="$(jq -cS "$2" <<<"${config}")"
    [[ "${got}" == "$(jq -cS . <<<"$3")" ]] || die "image $1 is ${got}, the Dockerfile says $3"
  }
  expect_json user .config.User "\"${USER_SPEC}\""
  expect_json entrypoint .config.Entrypoint "${ENTRYPOINT}"
  expect_json cmd .config.Cmd "${CMD}"
  want="{}"
  for kv in "${LABELS[@]}"; do want="$(jq -c --arg k "${kv%%=*}" --arg v "${kv#*=}" '. + {($k): $v}' <<<"${want}")"; done
  expect_json labels '.config.Labels // {}' "${want}"
  want="[]"
  for kv in "${ENVS[@]}"; do want="$(jq -c --arg e "${kv}" '. + [$e]' <<<"${want}")"; done
  expect_json env '.config.Env // []' "${want}"
  want="{}"
  for p in "${PORTS[@]}"; do [[ "${p}" == */* ]] || p+=/tcp; want="$(jq -c --arg p "${p}" '. + {($p): {}}' <<<"${want}")"; done
  expect_json ports '.config.ExposedPorts // {}' "${want}"

  # The ports the chart's Deployment declares are the ones the image exposes.
  local chart_ports
  chart_ports="$(deployment_json | jq -c '[.spec.template.spec.containers[0].ports[] | "\(.containerPort)/\(.protocol | ascii_downcase)"]')"
  got="$(jq -cS '.config.ExposedPorts // {} | keys' <<<"${config}")"
  [[ "${got}" == "$(jq -cS 'sort' <<<"${chart_ports}")" ]] || die "the image exposes ${got}, the chart's Deployment declares ${chart_ports}"
  log "configuration as the Dockerfile says: user ${USER_SPEC}, entrypoint ${ENTRYPOINT}, cmd ${CMD}, ports ${got}, ${#LABELS[@]} labels"
}

check_files() {
  local spec want got
  want="$(for spec in "${COPIES[@]}"; do parse_copy "${spec}"; printf '%s %s %s\n' "${copy_dest}" "${copy_chown:-0:0}" "${copy_chmod:-any}"; done | sort)"
  got="$(cd "${ROOTFS}" && find . -type f -o -type l | sed 's|^\.||' | sort)"
  [[ "${got}" == "$(cut -d' ' -f1 <<<"${want}")" ]] || die "the image holds other files than the Dockerfile copies:
$(diff <(cut -d' ' -f1 <<<"${want}") <(printf '%s\n' "${got}") || true)"
  local path owner mode
  while read -r path owner mode; do
    got="$(stat -c '%u:%g %a' "${ROOTFS}${path}")"
    [[ "${got%% *}" == "${owner}" ]] || die "${path} is owned by ${got%% *}, the Dockerfile says ${owner}"
    [[ "${mode}" == any || "${got#* }" == "$(printf '%o' "$((8#${mode}))")" ]] \
      || die "${path} has mode ${got#* }, the Dockerfile says ${mode}"
  done <<<"${want}"
  grep -q "^[^:]*:x:${USER_SPEC%%:*}:${USER_SPEC##*:}:" "${ROOTFS}/etc/passwd" \
    || die "/etc/passwd of the image has no user ${USER_SPEC}"
  log "files: exactly the $(wc -l <<<"${want}") the Dockerfile copies, with their owners and modes"
}

# image_command [NAME=VALUE...] -- ARGS...: sets IMAGE_COMMAND to the
# entrypoint with ARGS, chrooted in the image as its user, with no environment
# but NAME=VALUE... (env and chroot exec, so it keeps the pid they start with).
image_command() {
  local entry
  local -a envs=()
  while [[ "$1" != -- ]]; do envs+=("$1"); shift; done
  shift
  entry="$(jq -r '.[0]' <<<"${ENTRYPOINT}")"
  IMAGE_COMMAND=(env -i "${envs[@]}" "$(command -v chroot)" --userspec="${USER_SPEC}" "${ROOTFS}" "${entry}" "$@")
}
in_image() { image_command "$@" && "${IMAGE_COMMAND[@]}"; }

# The Dockerfile's final stage built by a Dockerfile builder (buildah bud,
# context the repository with its .dockerignore), its build stage stood in
# for by an image holding what the image's COPY --from=builder lines took
# from it: the same files, owners, modes, contents and configuration.
check_dockerfile_build() {
  local start=${SECONDS} last spec c stage mnt
  stage="$("${BUILDAH[@]}" from --quiet scratch)" || die "buildah from scratch failed"
  for spec in "${COPIES[@]}"; do
    parse_copy "${spec}"
    [[ "${copy_from}" == builder ]] || continue
    "${BUILDAH[@]}" copy --quiet "${stage}" "${ROOTFS}${copy_dest}" "${copy_word}" >/dev/null \
      || die "buildah copy of ${copy_dest} into the build stage failed"
  done
  "${BUILDAH[@]}" commit --quiet "${stage}" localhost/tco-build-stage:latest >/dev/null || die "buildah commit of the build stage failed"
  last="$(grep -n -i '^FROM[[:space:]]' "${DOCKERFILE}" | tail -n1 | cut -d: -f1)"
  { echo "FROM localhost/tco-build-stage:latest AS builder"; tail -n "+${last}" "${DOCKERFILE}"; } >"${WORK}/Dockerfile.final"
  "${BUILDAH[@]}" bud --quiet --pull=never --isolation chroot --layers=false --identity-label=false \
    --build-arg "VERSION=${VERSION}" -f "${WORK}/Dockerfile.final" -t localhost/tco-dockerfile:latest "${ROOT}" \
    >"${WORK}/bud.log" 2>&1 || die "buildah bud of the Dockerfile's final stage failed:
$(tail -n 20 "${WORK}/bud.log")"
  local want got
  want="$(jq -cS '.config | {User, ExposedPorts, Env, Entrypoint, Cmd, Labels}' < <(skopeo inspect --config "oci-archive:${output}:${VERSION}"))"
  got="$("${BUILDAH[@]}" inspect --type image localhost/tco-dockerfile:latest | jq -cS '.OCIv1.config | {User, ExposedPorts, Env, Entrypoint, Cmd, Labels}')"
  [[ "${got}" == "${want}" ]] || die "the Dockerfile's final stage, built by buildah bud, has the configuration
  ${got}
the archive has
  ${want}"
  if ! c="$("${BUILDAH[@]}" from --quiet localhost/tco-dockerfile:latest)" || ! mnt="$("${BUILDAH[@]}" mount "${c}")"; then
    die "cannot mount the image buildah bud built"
  fi
  tree() { (cd "$1" && find . -mindepth 1 \( -type f -o -type l \) -printf '%P %U:%G %m ' -exec sha256sum {} \; | awk '{print $1, $2, $3, $4}' | sort); }
  want="$(tree "${ROOTFS}")" got="$(tree "${mnt}")"
  "${BUILDAH[@]}" umount "${c}" >/dev/null
  [[ "${got}" == "${want}" ]] || die "the Dockerfile's final stage, built by buildah bud, holds other files than the archive:
$(diff <(printf '%s\n' "${want}") <(printf '%s\n' "${got}") || true)"
  log "the Dockerfile's final stage, built by buildah bud: the same $(wc -l <<<"${want}") files and configuration ($((SECONDS - start))s)"
}

check_version() {
  local got
  got="$(in_image -- --version 2>&1)" || die "'${NAME} --version' in the image failed: ${got}"
  [[ "${got}" == "${NAME} ${VERSION}" ]] || die "'--version' in the image printed '${got}', expected '${NAME} ${VERSION}'"
  log "--version as ${USER_SPEC} in the image: ${got}"
}

deployment_json() {
  helm template "${RELEASE:-img}" "${CHART}" -n "${OPS_NS:-img}" ${TENANT_NS:+--set "watchNamespace=${TENANT_NS}"} \
    --show-only templates/deployment.yaml >"${WORK}/deployment.yaml" || die "helm template of the chart's Deployment failed"
  kubectl create --dry-run=client -o json -f "${WORK}/deployment.yaml" || die "kubectl could not read the chart's Deployment"
}

wait_for() { # description timeout-seconds command...: poll until command succeeds
  local what="$1" deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    [[ -z "${OP_PID:-}" ]] || kill -0 "${OP_PID}" 2>/dev/null \
      || die "the operator exited while waiting for ${what}:
$(tail -n 30 "${WORK}/operator.log")"
    sleep 0.5
  done
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

use_cluster() {
  if [[ -z "${KUBECONFIG:-}" ]]; then
    "${ROOT}/hack/cluster.sh" status >/dev/null 2>&1 \
      || die "KUBECONFIG is not set and the local cluster is not up (hack/cluster.sh up, then eval \"\$(hack/cluster.sh env)\")"
    eval "$("${ROOT}/hack/cluster.sh" env)"
  fi
  need kubectl helm curl
  kubectl get --raw /readyz >/dev/null 2>&1 || die "the cluster in ${KUBECONFIG} does not answer (hack/cluster.sh status)"
}

run_on_cluster() {
  local server host port
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  [[ "${server}" =~ ^https://([^/:]+|\[[^]]+\]):([0-9]+)/?$ ]] || die "cannot read host and port from the API server URL '${server}'"
  host="${BASH_REMATCH[1]}" port="${BASH_REMATCH[2]}"

  local id
  id="img-$(date +%s)-$$"
  RELEASE="${id}" OPS_NS="${id}-ops" TENANT_NS="${id}-tenant"
  local sa="${RELEASE}-${NAME}" tenant=acme profile="${id}-voice" plan="${id}-pro"
  log "cluster ${server}: namespaces ${OPS_NS} and ${TENANT_NS}, ServiceAccount ${sa}"
  CLEANUPS+=("kubectl delete namespace ${OPS_NS} ${TENANT_NS} --ignore-not-found --wait=false >/dev/null")
  kubectl create namespace "${OPS_NS}" >/dev/null || die "cannot create namespace ${OPS_NS}"
  kubectl create namespace "${TENANT_NS}" >/dev/null || die "cannot create namespace ${TENANT_NS}"
  kubectl label namespace "${TENANT_NS}" "capacity.tenancy.dev/tenant=${tenant}" >/dev/null

  if ! kubectl get crd tenantsubscriptions.capacity.tenancy.dev >/dev/null 2>&1; then
    log "installing the CRDs (missing; left installed)"
    in_image -- crd >"${WORK}/crds.yaml" || die "'${NAME} crd' in the image failed"
    kubectl create -f "${WORK}/crds.yaml" >/dev/null || die "cannot install the CRDs"
    kubectl wait --for=condition=Established -f "${WORK}/crds.yaml" --timeout="${TIMEOUT}s" >/dev/null || die "CRDs not established"
  fi

  # The chart's identity: ServiceAccount, RBAC, metrics RBAC, nothing else.
  # The operator's own ServiceAccount is made a metrics reader, to read what
  # it exports; another one, "outsider", is not.
  helm template "${RELEASE}" "${CHART}" -n "${OPS_NS}" --set "watchNamespace=${TENANT_NS}" \
    --set-json "metrics.readers=[{\"kind\":\"ServiceAccount\",\"name\":\"${sa}\",\"namespace\":\"${OPS_NS}\"}]" \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
    --show-only templates/metrics-rbac.yaml >"${WORK}/identity.yaml" || die "helm template of the chart's RBAC failed"
  CLEANUPS+=("kubectl delete -f ${WORK@Q}/identity.yaml --ignore-not-found --wait=false >/dev/null 2>&1")
  kubectl apply -f "${WORK}/identity.yaml" >/dev/null || die "cannot apply the chart's ServiceAccount and RBAC"
  kubectl create serviceaccount outsider -n "${OPS_NS}" >/dev/null || die "cannot create ServiceAccount outsider"

  # What the kubelet mounts into the pod.
  local sadir="${ROOTFS}${SA_DIR}"
  mkdir -p "${sadir}"
  kubectl create token "${sa}" -n "${OPS_NS}" --duration 10m >"${sadir}/token" || die "kubectl create token ${sa} failed"
  kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"${sadir}/ca.crt"
  if [[ ! -s "${sadir}/ca.crt" ]]; then
    local ca_file
    ca_file="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
    [[ -n "${ca_file}" && -f "${ca_file}" ]] || die "no cluster CA in ${KUBECONFIG}"
    cp "${ca_file}" "${sadir}/ca.crt"
  fi
  printf '%s' "${OPS_NS}" >"${sadir}/namespace"
  chmod 0644 "${sadir}"/*

  # The container's arguments as the chart renders them; the kubelet expands
  # $(POD_NAMESPACE); the ports become loopback ones the log tells.
  local -a args=()
  local a prev=""
  mapfile -t args < <(deployment_json | jq -r '.spec.template.spec.containers[0].args[]')
  ((${#args[@]})) || die "no arguments in the chart's Deployment"
  for a in "${!args[@]}"; do
    case "${prev}" in
      --metrics-bind-address | --health-probe-bind-address) args[a]=127.0.0.1:0 ;;
    esac
    prev="${args[a]}"
    args[a]="${args[a]//\$(POD_NAMESPACE)/${OPS_NS}}"
  done
  log "starting ${NAME} ${args[*]}"
  image_command KUBERNETES_SERVICE_HOST="${host}" KUBERNETES_SERVICE_PORT="${port}" \
    POD_NAMESPACE="${OPS_NS}" POD_NAME="${RELEASE}-0" HOSTNAME="${RELEASE}-0" -- "${args[@]}"
  "${IMAGE_COMMAND[@]}" >"${WORK}/operator.log" 2>&1 &
  OP_PID=$!
  # shellcheck disable=SC2016 # expanded when the cleanup runs
  CLEANUPS+=('[[ -z "${OP_PID:-}" ]] || { kill -KILL "${OP_PID}" && wait "${OP_PID}"; } 2>/dev/null')

  local addresses="" health metrics
  read_addresses() {
    addresses="$(grep -m1 '"serving metrics and health probes"' "${WORK}/operator.log" 2>/dev/null || true)"
    [[ -n "${addresses}" ]]
  }
  wait_for "its listening addresses" "${TIMEOUT}" read_addresses || die "no 'serving metrics and health probes' line after ${TIMEOUT}s:
$(tail -n 30 "${WORK}/operator.log")"
  health="$(jq -r '.fields.health // .health' <<<"${addresses}")"
  metrics="$(jq -r '.fields.metrics // .metrics' <<<"${addresses}")"
  local ready_start=${SECONDS}
  ready() { [[ "$(http_status "http://${health}/readyz")" == 200 ]]; }
  wait_for "/readyz" "${TIMEOUT}" ready || die "/readyz at ${health} did not answer 200 within ${TIMEOUT}s: $(curl -s --max-time 5 "http://${health}/readyz" || true)
$(tail -n 30 "${WORK}/operator.log")"
  log "/readyz 200 after $((SECONDS - ready_start))s (health ${health}, metrics ${metrics})"

  local status uid gid caps root
  status="$(cat "/proc/${OP_PID}/status")" || die "no /proc/${OP_PID}/status"
  uid="$(awk '/^Uid:/ {print $2, $3, $4, $5}' <<<"${status}")"
  gid="$(awk '/^Gid:/ {print $2, $3, $4, $5}' <<<"${status}")"
  caps="$(awk '/^CapEff:/ {print $2}' <<<"${status}")"
  root="$(readlink "/proc/${OP_PID}/root")"
  local u="${USER_SPEC%%:*}" g="${USER_SPEC##*:}"
  [[ "${uid}" == "${u} ${u} ${u} ${u}" ]] || die "the operator runs with uids ${uid}, not ${u}"
  [[ "${gid}" == "${g} ${g} ${g} ${g}" ]] || die "the operator runs with gids ${gid}, not ${g}"
  [[ "${caps}" =~ ^0+$ ]] || die "the operator has effective capabilities ${caps}"
  [[ "${root}" == "$(realpath "${ROOTFS}")" ]] || die "the operator's root is ${root}, not the image's ${ROOTFS}"
  log "process ${OP_PID}: uid ${u}, gid ${g}, no capabilities, root the image's file system"

  # /metrics as the chart serves it: HTTPS (self-signed), authenticated.
  local code outsider
  code="$(http_status -k "https://${metrics}/metrics")"
  [[ "${code}" == 401 ]] || die "/metrics without a token answered ${code}, expected 401"
  outsider="$(kubectl create token outsider -n "${OPS_NS}" --duration 10m)" || die "kubectl create token outsider failed"
  code="$(http_status -k -H "Authorization: Bearer ${outsider}" "https://${metrics}/metrics")"
  [[ "${code}" == 403 ]] || die "/metrics with the token of a ServiceAccount that is no metrics reader answered ${code}, expected 403"
  code="$(http_status -k -H "Authorization: Bearer $(cat "${sadir}/token")" "https://${metrics}/metrics")"
  [[ "${code}" == 200 ]] || die "/metrics with a metrics reader's token answered ${code}, expected 200"
  log "/metrics over HTTPS: 401 without a token, 403 to a ServiceAccount that is no reader, 200 to a reader"

  CLEANUPS+=("kubectl delete moduleprofile ${profile} --ignore-not-found --wait=false >/dev/null" "kubectl delete subscriptionplan ${plan} --ignore-not-found --wait=false >/dev/null")
  kubectl apply -f - >/dev/null <<EOF || die "cannot apply the ModuleProfile, SubscriptionPlan and TenantSubscription"
apiVersion: capacity.tenancy.dev/v1alpha1
kind: ModuleProfile
metadata: {name: ${profile}}
spec:
  image: registry.example.com/rtc/voice-sfu:5.1.3
  port: 5060
  sessionsPerReplica: 200
  resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 200m, memory: 128Mi}}
---
apiVersion: capacity.tenancy.dev/v1alpha1
kind: SubscriptionPlan
metadata: {name: ${plan}}
spec:
  regions: [eu-west-1, us-east-1]
  modules:
    - {name: ${profile}, maxConcurrency: 1000}
---
apiVersion: capacity.tenancy.dev/v1alpha1
kind: TenantSubscription
metadata: {name: ${tenant}, namespace: ${TENANT_NS}}
spec:
  tenantId: ${tenant}
  plan: ${plan}
  modules:
    - {name: ${profile}, concurrency: 300}
EOF
  local sub_start=${SECONDS}
  sub_ready() {
    [[ "$(kubectl get tenantsubscription "${tenant}" -n "${TENANT_NS}" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
  }
  wait_for "the TenantSubscription to be Ready" "${TIMEOUT}" sub_ready \
    || die "TenantSubscription ${TENANT_NS}/${tenant} not Ready within ${TIMEOUT}s: $(kubectl get tenantsubscription "${tenant}" -n "${TENANT_NS}" -o jsonpath='{.status.conditions}' 2>&1)
$(tail -n 30 "${WORK}/operator.log")"
  kubectl get deployment "${tenant}-${profile}" -n "${TENANT_NS}" >/dev/null 2>&1 \
    || die "TenantSubscription Ready but no Deployment ${tenant}-${profile} in ${TENANT_NS}"
  # This process (not another operator on the cluster) reconciled it: it
  # exports the module's ceiling, equal to the HPA's maxReplicas.
  local hpa_max series
  hpa_max="$(kubectl get hpa "${tenant}-${profile}" -n "${TENANT_NS}" -o jsonpath='{.spec.maxReplicas}')" \
    || die "no HorizontalPodAutoscaler ${tenant}-${profile} in ${TENANT_NS}"
  series="tenant_capacity_module_max_replicas{namespace=\"${TENANT_NS}\",subscription=\"${tenant}\",tenant=\"${tenant}\",module=\"${profile}\"} ${hpa_max}"
  exported() {
    curl -sk --max-time 5 -H "Authorization: Bearer $(cat "${sadir}/token")" "https://${metrics}/metrics" | grep -qxF "${series}"
  }
  wait_for "its metrics" "${TIMEOUT}" exported || die "/metrics of the operator has no '${series}' within ${TIMEOUT}s"
  log "TenantSubscription ${TENANT_NS}/${tenant} Ready after $((SECONDS - sub_start))s: Deployment applied, HPA maxReplicas ${hpa_max}, exported by this process"

  kill -TERM "${OP_PID}"
  stopped() { ! kill -0 "${OP_PID}" 2>/dev/null; }
  local pid="${OP_PID}" rc=0
  OP_PID="" # it is meant to exit now
  wait_for "the operator to stop" 60 stopped || die "the operator did not exit within 60s of SIGTERM"
  wait "${pid}" || rc=$?
  ((rc == 0)) || die "the operator exited ${rc} after SIGTERM, expected 0:
$(tail -n 30 "${WORK}/operator.log")"
  grep -q '"shutting down"' "${WORK}/operator.log" || die "no 'shutting down' in the operator's log after SIGTERM"
  log "SIGTERM: exited 0"
}

# ---------------------------------------------------------------------------

read_dockerfile
if ((build)); then
  build_image
fi
if ((verify)); then
  start=${SECONDS}
  need chroot
  use_cluster
  unpack
  check_config
  check_files
  check_dockerfile_build
  check_version
  run_on_cluster
  log "verified in $((SECONDS - start))s: ${output}"
else
  # The unpacked size is worth knowing even without the checks.
  unpack
fi
