"""cffi build script: the one place where pausetls declares C.

``setup.py`` names ``pausetls/core/_build_openssl.py:ffi`` in ``cffi_modules``; the
result is the extension ``pausetls.core._openssl`` linked against the *system*
libssl/libcrypto (OpenSSL >= 3.0).  Set ``PAUSETLS_OPENSSL_PREFIX`` to link
another OpenSSL installed under that prefix (``include/`` and ``lib64``/``lib``).

Callbacks are ``extern "Python"``: their Python bodies live in
``pausetls/_callbacks.py`` and are registered with ``ffi.def_extern``.  When a
Python body raises, cffi returns 0, which is the failure value of every
callback declared here.
"""

from __future__ import annotations

import os
import subprocess
import sys

from cffi import FFI

CDEF = r"""
typedef ... SSL_CTX;
typedef ... SSL;
typedef ... SSL_METHOD;
typedef ... SSL_CIPHER;
typedef ... SSL_SESSION;
typedef ... X509;
typedef ... X509_STORE_CTX;
typedef ... X509_VERIFY_PARAM;
typedef ... EVP_PKEY;
typedef ... BIO;
typedef ... pausetls_x509_stack;
typedef ... X509_NAME;
typedef ... pausetls_x509_name_stack;
typedef ... X509_STORE;
typedef ... X509_OBJECT;
typedef ... pausetls_x509_object_stack;
typedef ... pem_password_cb;

static const long OPENSSL_VERSION_NUMBER;
const char *OpenSSL_version(int);
static const int OPENSSL_VERSION;

static const int SSL_ERROR_NONE;
static const int SSL_ERROR_SSL;
static const int SSL_ERROR_WANT_READ;
static const int SSL_ERROR_WANT_WRITE;
static const int SSL_ERROR_SYSCALL;
static const int SSL_ERROR_ZERO_RETURN;

static const int SSL_VERIFY_NONE;
static const int SSL_VERIFY_PEER;
static const int SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
static const int SSL_VERIFY_CLIENT_ONCE;
static const int SSL_VERIFY_POST_HANDSHAKE;

static const int SSL_FILETYPE_PEM;
static const int SSL_FILETYPE_ASN1;

static const int TLS1_VERSION;
static const int TLS1_1_VERSION;
static const int TLS1_2_VERSION;
static const int TLS1_3_VERSION;

static const uint64_t SSL_OP_ALL;
static const uint64_t SSL_OP_NO_TICKET;
static const uint64_t SSL_OP_NO_COMPRESSION;
static const uint64_t SSL_OP_CIPHER_SERVER_PREFERENCE;
static const uint64_t SSL_OP_NO_RENEGOTIATION;
static const uint64_t SSL_OP_NO_SSLv3;
static const uint64_t SSL_OP_NO_TLSv1;
static const uint64_t SSL_OP_NO_TLSv1_1;
static const uint64_t SSL_OP_NO_TLSv1_2;
static const uint64_t SSL_OP_NO_TLSv1_3;
static const uint64_t SSL_OP_SINGLE_ECDH_USE;
static const uint64_t SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION;
static const uint64_t SSL_OP_IGNORE_UNEXPECTED_EOF;
static const uint64_t SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION;

static const long SSL_MODE_ENABLE_PARTIAL_WRITE;
static const long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
static const long SSL_MODE_AUTO_RETRY;
static const long SSL_MODE_RELEASE_BUFFERS;

static const int SSL_SENT_SHUTDOWN;
static const int SSL_RECEIVED_SHUTDOWN;

static const long SSL_SESS_CACHE_OFF;
static const long SSL_SESS_CACHE_SERVER;
static const long SSL_SESS_CACHE_CLIENT;
static const long SSL_SESS_CACHE_NO_AUTO_CLEAR;
static const long SSL_SESS_CACHE_NO_INTERNAL_LOOKUP;
static const long SSL_SESS_CACHE_NO_INTERNAL_STORE;
static const long SSL_SESS_CACHE_NO_INTERNAL;

static const int X509_V_OK;
static const int X509_V_ERR_APPLICATION_VERIFICATION;
static const int X509_V_ERR_CERT_REJECTED;
static const int X509_V_ERR_UNSPECIFIED;
static const int X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT;
static const int X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
static const int X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN;
static const int X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT;
static const unsigned int X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;

static const int SSL_TLSEXT_ERR_OK;
static const int SSL_TLSEXT_ERR_ALERT_FATAL;
static const int SSL_TLSEXT_ERR_NOACK;
static const int SSL_CLIENT_HELLO_SUCCESS;
static const int SSL_CLIENT_HELLO_ERROR;
static const int SSL_AD_HANDSHAKE_FAILURE;
static const int SSL_AD_BAD_CERTIFICATE;
static const int SSL_AD_UNKNOWN_CA;
static const int SSL_AD_ACCESS_DENIED;
static const int SSL_AD_INTERNAL_ERROR;
static const int SSL_AD_UNRECOGNIZED_NAME;
static const int SSL_AD_BAD_CERTIFICATE_STATUS_RESPONSE;
static const int SSL_AD_NO_APPLICATION_PROTOCOL;
static const int TLSEXT_STATUSTYPE_ocsp;

static const int ERR_LIB_SSL;
static const int SSL_R_UNEXPECTED_EOF_WHILE_READING;
static const int SSL_R_CERTIFICATE_VERIFY_FAILED;

const SSL_METHOD *TLS_method(void);
const SSL_METHOD *TLS_server_method(void);
const SSL_METHOD *TLS_client_method(void);

SSL_CTX *SSL_CTX_new(const SSL_METHOD *);
void SSL_CTX_free(SSL_CTX *);
int SSL_CTX_use_certificate_chain_file(SSL_CTX *, const char *);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *, const char *, int);
int SSL_CTX_use_certificate(SSL_CTX *, X509 *);
int SSL_CTX_use_PrivateKey(SSL_CTX *, EVP_PKEY *);
int SSL_CTX_add_extra_chain_cert(SSL_CTX *, X509 *);
int SSL_CTX_check_private_key(const SSL_CTX *);
int SSL_CTX_load_verify_locations(SSL_CTX *, const char *, const char *);
int SSL_CTX_set_default_verify_paths(SSL_CTX *);
void SSL_CTX_set_verify(SSL_CTX *, int, int (*)(int, X509_STORE_CTX *));
void SSL_CTX_set_verify_depth(SSL_CTX *, int);
int SSL_CTX_get_verify_mode(const SSL_CTX *);
int SSL_CTX_set_cipher_list(SSL_CTX *, const char *);
int SSL_CTX_set_ciphersuites(SSL_CTX *, const char *);
long SSL_CTX_set1_groups_list(SSL_CTX *, const char *);
int SSL_CTX_set0_tmp_dh_pkey(SSL_CTX *, EVP_PKEY *);
EVP_PKEY *pausetls_read_dh_params(const char *);
long SSL_CTX_set_min_proto_version(SSL_CTX *, int);
long SSL_CTX_set_max_proto_version(SSL_CTX *, int);
uint64_t SSL_CTX_set_options(SSL_CTX *, uint64_t);
uint64_t SSL_CTX_get_options(const SSL_CTX *);
long SSL_CTX_set_mode(SSL_CTX *, long);
void SSL_CTX_set_read_ahead(SSL_CTX *, int);
int SSL_CTX_get_read_ahead(SSL_CTX *);
int SSL_CTX_set_alpn_protos(SSL_CTX *, const unsigned char *, unsigned int);
int SSL_CTX_set_session_id_context(SSL_CTX *, const unsigned char *, unsigned int);
long SSL_CTX_set_timeout(SSL_CTX *, long);
long SSL_CTX_get_timeout(const SSL_CTX *);
long SSL_CTX_set_session_cache_mode(SSL_CTX *, long);
long SSL_CTX_get_session_cache_mode(SSL_CTX *);
void SSL_CTX_sess_set_new_cb(SSL_CTX *, int (*)(SSL *, SSL_SESSION *));
void SSL_CTX_sess_set_remove_cb(SSL_CTX *, void (*)(SSL_CTX *, SSL_SESSION *));
void SSL_CTX_sess_set_get_cb(SSL_CTX *,
    SSL_SESSION *(*)(SSL *, const unsigned char *, int, int *));
int SSL_CTX_set_num_tickets(SSL_CTX *, size_t);
int SSL_CTX_set_ex_data(SSL_CTX *, int, void *);
int SSL_CTX_up_ref(SSL_CTX *);
void *SSL_CTX_get_ex_data(const SSL_CTX *, int);
void SSL_CTX_set_alpn_select_cb(SSL_CTX *,
    int (*)(SSL *, const unsigned char **, unsigned char *,
            const unsigned char *, unsigned int, void *), void *);
int SSL_select_next_proto(unsigned char **, unsigned char *,
    const unsigned char *, unsigned int, const unsigned char *, unsigned int);

long SSL_CTX_set_tlsext_servername_callback(SSL_CTX *, int (*)(SSL *, int *, void *));
void SSL_CTX_set_client_hello_cb(SSL_CTX *, int (*)(SSL *, int *, void *), void *);
int SSL_client_hello_get0_ext(SSL *, unsigned int, const unsigned char **, size_t *);
size_t SSL_client_hello_get0_ciphers(SSL *, const unsigned char **);
unsigned int SSL_client_hello_get0_legacy_version(SSL *);
int SSL_client_hello_get1_extensions_present(SSL *, int **, size_t *);
void SSL_CTX_set_cert_cb(SSL_CTX *, int (*)(SSL *, void *), void *);
long SSL_CTX_set_tlsext_status_cb(SSL_CTX *, int (*)(SSL *, void *));
long SSL_set_tlsext_status_type(SSL *, int);
long SSL_set_tlsext_status_ocsp_resp(SSL *, unsigned char *, long);
long SSL_get_tlsext_status_ocsp_resp(SSL *, const unsigned char **);
int SSL_use_certificate(SSL *, X509 *);
int SSL_use_PrivateKey(SSL *, EVP_PKEY *);
int SSL_use_certificate_chain_file(SSL *, const char *);
long SSL_add1_chain_cert(SSL *, X509 *);
void SSL_certs_clear(SSL *);
int SSL_check_private_key(const SSL *);
const SSL_CIPHER *SSL_CIPHER_find(SSL *, const unsigned char *);
void *OPENSSL_malloc(size_t);

SSL *SSL_new(SSL_CTX *);
uint64_t SSL_set_options(SSL *, uint64_t);
void SSL_free(SSL *);
int SSL_set_fd(SSL *, int);
void SSL_set_accept_state(SSL *);
void SSL_set_connect_state(SSL *);
int SSL_is_server(const SSL *);
int SSL_do_handshake(SSL *);
int SSL_is_init_finished(const SSL *);
int SSL_read_ex(SSL *, void *, size_t, size_t *);
int SSL_write_ex(SSL *, const void *, size_t, size_t *);
int SSL_get_error(const SSL *, int);
int SSL_pending(const SSL *);
int SSL_has_pending(const SSL *);
int SSL_shutdown(SSL *);
int SSL_get_shutdown(const SSL *);
void SSL_set_shutdown(SSL *, int);
int SSL_set_ex_data(SSL *, int, void *);
int SSL_up_ref(SSL *);
void *SSL_get_ex_data(const SSL *, int);
int SSL_get_ex_data_X509_STORE_CTX_idx(void);
long SSL_set_tlsext_host_name(SSL *, char *);
const char *SSL_get_servername(const SSL *, const int);
int SSL_set1_host(SSL *, const char *);
void SSL_set_hostflags(SSL *, unsigned int);
X509 *SSL_get1_peer_certificate(const SSL *);
pausetls_x509_stack *SSL_get_peer_cert_chain(const SSL *);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *);
const char *SSL_CIPHER_get_version(const SSL_CIPHER *);
int SSL_CIPHER_get_bits(const SSL_CIPHER *, int *);
const char *SSL_get_version(const SSL *);
int SSL_version(const SSL *);
void SSL_get0_alpn_selected(const SSL *, const unsigned char **, unsigned int *);
int SSL_session_reused(const SSL *);
long SSL_get_verify_result(const SSL *);
int SSL_get_verify_depth(const SSL *);
void SSL_set_verify_depth(SSL *, int);
int SSL_CTX_get_verify_depth(const SSL_CTX *);
void SSL_set_verify(SSL *, int, int (*)(int, X509_STORE_CTX *));
int SSL_get_verify_mode(const SSL *);
int SSL_renegotiate(SSL *);
int SSL_renegotiate_pending(const SSL *);
int SSL_verify_client_post_handshake(SSL *);
void SSL_set_post_handshake_auth(SSL *, int);
void SSL_CTX_set_post_handshake_auth(SSL_CTX *, int);
SSL_CTX *SSL_get_SSL_CTX(const SSL *);
SSL_CTX *SSL_set_SSL_CTX(SSL *, SSL_CTX *);
SSL_SESSION *SSL_get1_session(SSL *);
SSL_SESSION *SSL_get_session(const SSL *);
const unsigned char *SSL_SESSION_get0_id_context(const SSL_SESSION *, unsigned int *);
int SSL_SESSION_set1_id_context(SSL_SESSION *, const unsigned char *, unsigned int);
const char *SSL_SESSION_get0_hostname(const SSL_SESSION *);
long SSL_SESSION_get_timeout(const SSL_SESSION *);
int SSL_set_session(SSL *, SSL_SESSION *);
void SSL_SESSION_free(SSL_SESSION *);
int SSL_SESSION_is_resumable(const SSL_SESSION *);
SSL_SESSION *d2i_SSL_SESSION(SSL_SESSION **, const unsigned char **, long);
int i2d_SSL_SESSION(SSL_SESSION *, unsigned char **);
const unsigned char *SSL_SESSION_get_id(const SSL_SESSION *, unsigned int *);
size_t SSL_SESSION_get_master_key(const SSL_SESSION *, unsigned char *, size_t);
int SSL_SESSION_has_ticket(const SSL_SESSION *);
int SSL_SESSION_get_protocol_version(const SSL_SESSION *);
long SSL_SESSION_get_time(const SSL_SESSION *);

X509 *X509_STORE_CTX_get_current_cert(const X509_STORE_CTX *);
X509_STORE *SSL_CTX_get_cert_store(const SSL_CTX *);
pausetls_x509_object_stack *X509_STORE_get0_objects(X509_STORE *);
int sk_X509_OBJECT_num(const pausetls_x509_object_stack *);
X509_OBJECT *sk_X509_OBJECT_value(const pausetls_x509_object_stack *, int);
X509 *X509_OBJECT_get0_X509(const X509_OBJECT *);
void SSL_CTX_set_cert_verify_callback(SSL_CTX *, int (*)(X509_STORE_CTX *, void *), void *);
int pausetls_cert_verify_cb(X509_STORE_CTX *, void *);
int pausetls_verify_peer_again(SSL *, int (*)(int, X509_STORE_CTX *));
int X509_STORE_CTX_get_error(const X509_STORE_CTX *);
void X509_STORE_CTX_set_error(X509_STORE_CTX *, int);
int X509_STORE_CTX_get_error_depth(const X509_STORE_CTX *);
void *X509_STORE_CTX_get_ex_data(const X509_STORE_CTX *, int);
const char *X509_verify_cert_error_string(long);

X509 *d2i_X509(X509 **, const unsigned char **, long);
int i2d_X509(X509 *, unsigned char **);
void X509_free(X509 *);
EVP_PKEY *d2i_AutoPrivateKey(EVP_PKEY **, const unsigned char **, long);
void EVP_PKEY_free(EVP_PKEY *);

int sk_X509_num(const pausetls_x509_stack *);
pausetls_x509_name_stack *SSL_load_client_CA_file(const char *);
void SSL_CTX_set_client_CA_list(SSL_CTX *, pausetls_x509_name_stack *);
pausetls_x509_name_stack *SSL_CTX_get_client_CA_list(const SSL_CTX *);
pausetls_x509_name_stack *SSL_get_client_CA_list(const SSL *);
int SSL_CTX_add_client_CA(SSL_CTX *, X509 *);
pausetls_x509_name_stack *sk_X509_NAME_new_null(void);
int sk_X509_NAME_push(pausetls_x509_name_stack *, X509_NAME *);
int sk_X509_NAME_num(const pausetls_x509_name_stack *);
X509_NAME *sk_X509_NAME_value(const pausetls_x509_name_stack *, int);
void pausetls_x509_name_stack_free(pausetls_x509_name_stack *);
X509_NAME *d2i_X509_NAME(X509_NAME **, const unsigned char **, long);
int i2d_X509_NAME(const X509_NAME *, unsigned char **);
void X509_NAME_free(X509_NAME *);
X509 *sk_X509_value(const pausetls_x509_stack *, int);
void OPENSSL_free(void *);

typedef struct {
    unsigned long code;
    const char *file;
    int line;
    const char *func;
    const char *library;
    const char *reason;
    char data[...];
} pausetls_err_entry;
static const int PAUSETLS_ERR_BATCH;
size_t pausetls_err_drain(pausetls_err_entry *, size_t);
unsigned long ERR_peek_error(void);
void ERR_clear_error(void);
const char *ERR_reason_error_string(unsigned long);
const char *ERR_lib_error_string(unsigned long);
int ERR_GET_LIB(unsigned long);
int ERR_GET_REASON(unsigned long);
void pausetls_err_restore(unsigned long, const char *, int, const char *,
                          const char *);

int pausetls_x509_name_rfc2253(const X509 *, int, char *, int);

extern "Python" int pausetls_verify_cb(int, X509_STORE_CTX *);
extern "Python" SSL_SESSION *pausetls_session_get_cb(SSL *, const unsigned char *, int, int *);
extern "Python" int pausetls_session_new_cb(SSL *, SSL_SESSION *);
extern "Python" void pausetls_session_remove_cb(SSL_CTX *, SSL_SESSION *);
extern "Python" int pausetls_servername_cb(SSL *, int *, void *);
extern "Python" int pausetls_client_hello_cb(SSL *, int *, void *);
extern "Python" int pausetls_cert_cb(SSL *, void *);
extern "Python" int pausetls_status_cb(SSL *, void *);
extern "Python" int pausetls_alpn_select_cb(SSL *, const unsigned char **,
    unsigned char *, const unsigned char *, unsigned int, void *);

/* keylog (NSS key log lines, for Wireshark): never pauses, see pausetls/core/_keylog.py */
void SSL_CTX_set_keylog_callback(SSL_CTX *, void (*)(const SSL *, const char *));
extern "Python" void pausetls_keylog_cb(const SSL *, const char *);
/* -- stateless session tickets (pausetls/sessions/tickets.py, _callbacks.pausetls_ticket_key_cb) -- */
typedef ... EVP_CIPHER_CTX;
typedef ... EVP_MAC_CTX;
extern "Python" int pausetls_ticket_key_cb(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *,
    EVP_MAC_CTX *, int);
int SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *, int (*)(SSL *, unsigned char *, unsigned char *,
    EVP_CIPHER_CTX *, EVP_MAC_CTX *, int));
static const int PAUSETLS_TICKET_KEY_NAME_BYTES;
uint64_t SSL_CTX_clear_options(SSL_CTX *, uint64_t);
typedef int SSL_TICKET_STATUS;
typedef int SSL_TICKET_RETURN;
static const int SSL_TICKET_SUCCESS;
static const int SSL_TICKET_SUCCESS_RENEW;
static const int SSL_TICKET_RETURN_IGNORE_RENEW;
static const int SSL_TICKET_RETURN_USE;
static const int SSL_TICKET_RETURN_USE_RENEW;
extern "Python" SSL_TICKET_RETURN pausetls_ticket_decrypted_cb(SSL *, SSL_SESSION *, const unsigned char *, size_t,
    SSL_TICKET_STATUS, void *);
int SSL_CTX_set_session_ticket_cb(SSL_CTX *, int (*)(SSL *, void *),
    SSL_TICKET_RETURN (*)(SSL *, SSL_SESSION *, const unsigned char *, size_t, SSL_TICKET_STATUS, void *), void *);
int pausetls_ticket_init(EVP_CIPHER_CTX *, EVP_MAC_CTX *, const unsigned char *, const unsigned char *,
    unsigned char *, int);
"""

SOURCE = r"""
#include <openssl/opensslv.h>
#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "pausetls needs OpenSSL >= 3.0 headers (Debian 12: apt-get install libssl-dev)"
#endif
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

typedef STACK_OF(X509) pausetls_x509_stack;
typedef STACK_OF(X509_NAME) pausetls_x509_name_stack;

/* DH parameters from a PEM file ("BEGIN DH PARAMETERS"); NULL if unreadable or not DH. */
static EVP_PKEY *pausetls_read_dh_params(const char *path)
{
    BIO *bio = BIO_new_file(path, "r");
    EVP_PKEY *params;
    if (bio == NULL)
        return NULL;
    params = PEM_read_bio_Parameters(bio, NULL);
    BIO_free(bio);
    if (params != NULL && !EVP_PKEY_is_a(params, "DH")) {
        EVP_PKEY_free(params);
        return NULL;
    }
    return params;
}

/* mod_ssl's SSL_CLIENT_S_DN and SSL_CLIENT_I_DN: the subject (issuer != 0: the issuer) as mod_ssl
   prints it (X509_NAME_print_ex with XN_FLAG_RFC2253).  Copies at most cap bytes to out and returns
   the whole length (-1 on failure), so a caller whose buffer was too small can ask again. */
static int pausetls_x509_name_rfc2253(const X509 *cert, int issuer, char *out, int cap)
{
    const X509_NAME *name = issuer ? X509_get_issuer_name(cert) : X509_get_subject_name(cert);
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;
    if (bio == NULL)
        return -1;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0) {
        BIO_free(bio);
        return -1;
    }
    len = BIO_get_mem_data(bio, &data);
    if (len > 0 && data != NULL)
        memcpy(out, data, len < cap ? (size_t)len : (size_t)cap);
    BIO_free(bio);
    return len > INT_MAX ? -1 : (int)len;
}

/* sk_X509_NAME_pop_free takes a function pointer: simpler to free from C. */
static void pausetls_x509_name_stack_free(pausetls_x509_name_stack *names)
{
    sk_X509_NAME_pop_free(names, X509_NAME_free);
}

/* One error-queue entry, owned by the caller: `data` is copied (the queue's own copy belongs to
   this thread's error state and is freed with it); file, func, library and reason point to
   OpenSSL's static strings. */
typedef struct {
    unsigned long code;
    const char *file;
    int line;
    const char *func;
    const char *library;
    const char *reason;
    char data[256];
} pausetls_err_entry;

/* More than OpenSSL's queue holds (ERR_NUM_ERRORS is 16): one call usually drains it all. */
#define PAUSETLS_ERR_BATCH 16

/* Move up to `max` entries off this thread's error queue into `out`, oldest first, in one C call:
   no out-parameter is shared between threads, and the GIL is released once. */
static size_t pausetls_err_drain(pausetls_err_entry *out, size_t max)
{
    size_t n = 0;
    while (n < max) {
        const char *file = NULL, *func = NULL, *data = NULL;
        int line = 0, flags = 0;
        unsigned long code = ERR_get_error_all(&file, &line, &func, &data, &flags);
        if (code == 0)
            break;
        pausetls_err_entry *entry = &out[n++];
        entry->code = code;
        entry->file = file;
        entry->line = line;
        entry->func = func;
        entry->library = ERR_lib_error_string(code);
        entry->reason = ERR_reason_error_string(code);
        snprintf(entry->data, sizeof entry->data, "%s", data != NULL ? data : "");
    }
    return n;
}
typedef STACK_OF(X509_OBJECT) pausetls_x509_object_stack;

/* Put one saved error back on the queue (ERR_set_error is variadic). */
static void pausetls_err_restore(unsigned long code, const char *file, int line,
                                 const char *func, const char *data)
{
    ERR_new();
    ERR_set_debug(file, line, func);
    if (data != NULL && data[0] != '\0')
        ERR_set_error(ERR_GET_LIB(code), ERR_GET_REASON(code), "%s", data);
    else
        ERR_set_error(ERR_GET_LIB(code), ERR_GET_REASON(code), NULL);
}

/*
 * Sessions keep the peer's certificate but not its chain (i2d_SSL_SESSION drops it), so a
 * resumed peer could not be verified again when its certificate comes from an intermediate.
 * The intermediates of the verified chain ride along in the session's ticket appdata, which
 * tickets and i2d_SSL_SESSION both carry; they are only ever used as untrusted certificates.
 */
static int pausetls_keep_intermediates(SSL_SESSION *sess, STACK_OF(X509) *chain)
{
    int i, n = chain == NULL ? 0 : sk_X509_num(chain);
    size_t total = 0;
    unsigned char *buf, *p;
    int ok;

    for (i = 1; i < n; i++) {
        int len = i2d_X509(sk_X509_value(chain, i), NULL);
        if (len <= 0)
            return 0;
        total += (size_t)len;
    }
    if (total == 0)
        return SSL_SESSION_set1_ticket_appdata(sess, NULL, 0);
    buf = OPENSSL_malloc(total);
    if (buf == NULL)
        return 0;
    for (p = buf, i = 1; i < n; i++)
        i2d_X509(sk_X509_value(chain, i), &p);
    ok = SSL_SESSION_set1_ticket_appdata(sess, buf, total);
    OPENSSL_free(buf);
    return ok;
}

/* SSL_CTX_set_cert_verify_callback: OpenSSL's own verification, then (server) keep the chain. */
static int pausetls_cert_verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    SSL *s = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    int ok = X509_verify_cert(sctx);

    if (ok > 0 && s != NULL && SSL_is_server(s) && SSL_get_session(s) != NULL
        && !pausetls_keep_intermediates(SSL_get_session(s), X509_STORE_CTX_get0_chain(sctx))) {
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_OUT_OF_MEM);
        return 0;
    }
    return ok;
}

/* The untrusted certificates of a resumed peer: what it sent (in-memory sessions) and what
   pausetls_keep_intermediates kept.  NULL when out of memory or the kept data is damaged. */
static STACK_OF(X509) *pausetls_session_untrusted(SSL *s)
{
    STACK_OF(X509) *out = sk_X509_new_null();
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(s);
    void *data = NULL;
    size_t len = 0;
    const unsigned char *p, *end;
    int i;

    if (out == NULL)
        return NULL;
    for (i = 0; sent != NULL && i < sk_X509_num(sent); i++)
        if (!X509_add_cert(out, sk_X509_value(sent, i), X509_ADD_FLAG_UP_REF))
            goto fail;
    if (!SSL_SESSION_get0_ticket_appdata(SSL_get_session(s), &data, &len) || data == NULL)
        return out;
    for (p = data, end = p + len; p < end;) {
        X509 *x = d2i_X509(NULL, &p, (long)(end - p));
        if (x == NULL || !sk_X509_push(out, x)) {
            X509_free(x);
            goto fail;
        }
    }
    return out;
fail:
    sk_X509_pop_free(out, X509_free);
    return NULL;
}

/*
 * Verify a resumed session's peer certificate again, as ssl_verify_cert_chain does for a full
 * handshake: the trust store of the SSL's context now (after an SNI switch: the new one), the
 * SSL's verify parameters, the ssl_client purpose, and *cb* as the verify callback.  OpenSSL
 * itself never verifies on resumption.  Returns the X509_V_* result; never X509_V_OK on failure.
 */
static int pausetls_verify_peer_again(SSL *s, int (*cb)(int, X509_STORE_CTX *))
{
    X509 *leaf = SSL_get0_peer_certificate(s);
    X509_STORE_CTX *sctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = leaf == NULL ? NULL : pausetls_session_untrusted(s);
    X509_VERIFY_PARAM *param;
    int result = X509_V_ERR_UNSPECIFIED;

    if (sctx == NULL || untrusted == NULL
        || !X509_STORE_CTX_init(sctx, SSL_CTX_get_cert_store(SSL_get_SSL_CTX(s)), leaf, untrusted)
        || !X509_STORE_CTX_set_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx(), s))
        goto end;
    param = X509_STORE_CTX_get0_param(sctx);
    X509_STORE_CTX_set_default(sctx, "ssl_client");
    X509_VERIFY_PARAM_set1(param, SSL_get0_param(s));
    X509_VERIFY_PARAM_set_auth_level(param, SSL_get_security_level(s));
    X509_STORE_CTX_set_verify_cb(sctx, cb);
    if (X509_verify_cert(sctx) > 0) {
        result = X509_V_OK;
    } else {
        result = X509_STORE_CTX_get_error(sctx);
        if (result == X509_V_OK)
            result = X509_V_ERR_UNSPECIFIED;
    }
    SSL_set_verify_result(s, result);
end:
    X509_STORE_CTX_free(sctx);
    sk_X509_pop_free(untrusted, X509_free);
    return result;
}
/* -- stateless session tickets ----------------------------------------------------------------
 * The ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb) gets its 16-byte key name and
 * the two keys from Python; this sets up what OpenSSL seals the ticket with: AES-256-CBC under
 * *aes_key* with a fresh random IV when encrypting (the IV given when decrypting), and
 * HMAC-SHA256 under *hmac_key* (OpenSSL's own ticket format, the one nginx and Go use too).
 * Returns 1, or 0 on failure (no ticket, or a full handshake: never a fatal error). */
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>
#define PAUSETLS_TICKET_KEY_NAME_BYTES 16

static int pausetls_ticket_init(EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, const unsigned char *aes_key,
                                const unsigned char *hmac_key, unsigned char *iv, int enc)
{
    OSSL_PARAM params[3];

    if (enc && RAND_bytes(iv, 16) <= 0)
        return 0;
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)hmac_key, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (!EVP_CipherInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes_key, iv, enc))
        return 0;
    return EVP_MAC_CTX_set_params(hctx, params) ? 1 : 0;
}
"""

# -- remote private keys (issue 13): an in-process provider, its C in _remote_key.c -------------
REMOTE_KEY_CDEF = r"""
EVP_PKEY *pausetls_remote_key_new(EVP_PKEY *, size_t);
int pausetls_disable_static_rsa(SSL_CTX *);
int pausetls_remote_signer_for(SSL_CTX *, const char *, size_t *);
X509 *SSL_CTX_get0_certificate(const SSL_CTX *);
EVP_PKEY *X509_get0_pubkey(const X509 *);
extern "Python" int pausetls_remote_sign(size_t, const char *, const unsigned char *, size_t,
                                         unsigned char *, size_t *, size_t);
"""

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_remote_key.c")) as _source:
    REMOTE_KEY_SOURCE = _source.read()
# -- end of remote private keys ---------------------------------------------------------------

MISSING_HEADERS = (
    "pausetls: OpenSSL >= 3.0 development headers not found; install them "
    "(Debian/Ubuntu: apt-get install libssl-dev; Fedora: dnf install openssl-devel) "
    "or set PAUSETLS_OPENSSL_PREFIX to an OpenSSL 3 installation."
)


def _link_options() -> dict[str, list[str]]:
    prefix = os.environ.get("PAUSETLS_OPENSSL_PREFIX")
    if not prefix:
        return {"libraries": ["ssl", "crypto"]}
    libdirs = [path for path in (os.path.join(prefix, "lib64"), os.path.join(prefix, "lib")) if os.path.isdir(path)]
    return {
        "libraries": ["ssl", "crypto"],
        "include_dirs": [os.path.join(prefix, "include")],
        "library_dirs": libdirs,
        "runtime_library_dirs": libdirs,
    }


def _check_headers(options: dict[str, list[str]]) -> None:
    """Stop the build with one clear sentence when the headers are missing or too old."""
    probe = "#include <openssl/opensslv.h>\n#if OPENSSL_VERSION_NUMBER < 0x30000000L\n#error old\n#endif\n"
    cc = os.environ.get("CC", "cc")
    args = [cc, "-E", "-x", "c", "-"] + ["-I" + d for d in options.get("include_dirs", [])]
    try:
        result = subprocess.run(args, input=probe, capture_output=True, text=True, check=False)
    except OSError:
        return  # no compiler to probe with: let the real build report it
    if result.returncode != 0:
        sys.exit(MISSING_HEADERS)


_options = _link_options()
_check_headers(_options)

ffi = FFI()
ffi.cdef(CDEF)
ffi.cdef(REMOTE_KEY_CDEF)
ffi.set_source("pausetls.core._openssl", SOURCE + REMOTE_KEY_SOURCE, **_options)

if __name__ == "__main__":
    ffi.compile(verbose=True)
