#!/bin/sh
# tls-certs.sh DIR: the certificates of the TLS tests, made with the
# openssl command into DIR (which must exist):
#   ca.pem ca.key                 the test CA
#   server.pem server.key         CN=localhost, SAN DNS:localhost, IP:127.0.0.1 (by ca)
#   client-ok.pem/.key            CN=client-ok, SAN DNS:ok.client.test (by ca)
#   client-other.pem/.key         CN=client-other (by ca): verifies, not on allow-lists
#   client-expired.pem/.key       CN=client-ok, valid 2020-01-01..2020-01-02 (by ca)
#   rogue-ca.pem, client-rogue.pem/.key   CN=client-ok, signed by another CA
#   server2.pem server2.key       as server, but signed by rogue-ca (a new certificate on reload)
# Keys are mode 0600, as hopperd requires. Exit 0, or 1 with openssl's output.
set -eu
d=$1
cd "$d"
umask 077
log=openssl.log
run() { openssl "$@" >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }; }
key() { run genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

ca() { # NAME CN
    key "$1.key"
    run req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 -out "$1.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
# cert NAME CN CA EXT [ca options...]: a certificate signed by CA through `openssl ca`,
# which can also set dates in the past.
cert() {
    name=$1 cn=$2 by=$3 ext=$4
    shift 4
    key "$name.key"
    run req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
    mkdir -p "ca-$by"
    : >"ca-$by/index.txt"
    [ -f "ca-$by/serial" ] || echo 1000 >"ca-$by/serial"
    cat >"$name.cnf" <<CNF
[ca]
default_ca = d
[d]
database = ca-$by/index.txt
serial = ca-$by/serial
new_certs_dir = ca-$by
certificate = $by.pem
private_key = $by.key
default_md = sha256
policy = p
copy_extensions = none
unique_subject = no
[p]
commonName = supplied
[x]
$ext
CNF
    run ca -batch -notext -config "$name.cnf" -extensions x -in "$name.csr" -out "$name.pem" "$@"
}

ca ca "hopper test CA"
ca rogue-ca "rogue CA"
cert server localhost ca "subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth" -days 3650
cert client-ok client-ok ca "subjectAltName = DNS:ok.client.test
extendedKeyUsage = clientAuth" -days 3650
cert client-other client-other ca "extendedKeyUsage = clientAuth" -days 3650
cert client-expired client-ok ca "extendedKeyUsage = clientAuth" \
    -startdate 20200101000000Z -enddate 20200102000000Z
cert client-rogue client-ok rogue-ca "extendedKeyUsage = clientAuth" -days 3650
cert server2 localhost rogue-ca "subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth" -days 3650
chmod 600 ./*.key
