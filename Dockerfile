# binvault: static binary on a minimal, non-root image.
#   docker build -t binvault .
#   docker run --rm -v /etc/binvault:/etc/binvault:ro -v binvault-spool:/var/lib/binvault \
#     binvault run --config /etc/binvault/binvault.yaml
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/binvault ./cmd/binvault \
 && mkdir -p /out/var/lib/binvault

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/binvault /usr/local/bin/binvault
COPY --from=build --chown=65532:65532 /out/var/lib/binvault /var/lib/binvault
USER 65532:65532
VOLUME ["/var/lib/binvault"]
EXPOSE 9420
ENTRYPOINT ["/usr/local/bin/binvault"]
CMD ["--help"]
