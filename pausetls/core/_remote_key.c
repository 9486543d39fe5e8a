/*
 * Remote private keys: an in-process OpenSSL 3 provider whose signatures are made by Python.
 *
 * `_build_openssl.py` appends this file to the binding's C source.  A remote key is an EVP_PKEY
 * whose key management belongs to the provider below; it holds only the *public* half (taken from
 * the certificate) and the id of a Python signer.  libssl signs CertificateVerify and the TLS 1.2
 * ServerKeyExchange with EVP_DigestSignInit_ex/EVP_DigestSign on the handshake's own stack, with
 * no lock held (ssl/statem/statem_lib.c tls_construct_cert_verify, statem_srvr.c
 * tls_construct_server_key_exchange), so the signer, an `extern "Python"` callback, runs inside
 * the connection's job and may pause like any other hook.
 *
 * Why these shapes (OpenSSL 3.0.22, crypto/evp/m_sigver.c do_sigver_init):
 * - EVP_DigestSignInit needs the provider's digest_sign_init (3.0 does not hash for a provider
 *   that only has sign), so this provider hashes itself, with the default library context's
 *   digests, and hands Python the digest.
 * - The signature is fetched by the name the key management answers in query_operation_name,
 *   first in the caller's library context, then from the key's own provider.  A name nobody else
 *   registers (PAUSETLS_RK_SIGNATURE) makes that fetch land here, never on the default
 *   provider's ECDSA/RSA, to which the key would be exported without its private half.
 * - The provider lives in a library context of its own, so the "EC" and "RSA" key managements
 *   it registers (libssl recognises certificate keys with EVP_PKEY_is_a) are never picked by
 *   anything fetching "EC" or "RSA" in the default context.
 * - EVP_DigestSignFinal signs on a duplicate of the context: dupctx copies the running hash.
 * No deprecated API (EC_KEY_METHOD, RSA_METHOD) is used.
 */
#include <openssl/bn.h>
#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <string.h>

#define PAUSETLS_RK_PROVIDER "pausetls-remote-key"
#define PAUSETLS_RK_PROPS "provider=pausetls-remote-key"
#define PAUSETLS_RK_SIGNATURE "PAUSETLS-REMOTE-SIGN"
#define PAUSETLS_RK_SIGNER_PARAM "pausetls-signer"

/* The Python signer: fills sig[0..sigsize) and *siglen; 1 on success, 0 on failure. */
static int pausetls_remote_sign(size_t signer, const char *scheme, const unsigned char *digest,
                                size_t digest_len, unsigned char *sig, size_t *siglen, size_t sigsize);

typedef struct {
    int is_rsa;
    char group[64];          /* EC: the curve's name */
    unsigned char *pub;      /* EC: the encoded public point */
    size_t pub_len;
    BIGNUM *n, *e;           /* RSA */
    size_t signer;           /* 0: a public key only (a certificate's key imported to be compared) */
    int bits, security_bits, max_size;
} pausetls_rk_key;

static void *rk_new_ec(void *provctx)
{
    return OPENSSL_zalloc(sizeof(pausetls_rk_key));
}

static void *rk_new_rsa(void *provctx)
{
    pausetls_rk_key *key = OPENSSL_zalloc(sizeof(pausetls_rk_key));
    if (key != NULL)
        key->is_rsa = 1;
    return key;
}

static void rk_free(void *keydata)
{
    pausetls_rk_key *key = keydata;
    if (key == NULL)
        return;
    OPENSSL_free(key->pub);
    BN_free(key->n);
    BN_free(key->e);
    OPENSSL_free(key);
}

static int rk_has_public(const pausetls_rk_key *key)
{
    return key->is_rsa ? key->n != NULL && key->e != NULL : key->pub != NULL;
}

static int rk_has(const void *keydata, int selection)
{
    const pausetls_rk_key *key = keydata;
    if (key == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) && !rk_has_public(key))
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_DOMAIN_PARAMETERS) && !key->is_rsa && key->group[0] == '\0')
        return 0;
    /* the private half is the remote signer's */
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && key->signer == 0)
        return 0;
    return 1;
}

/* DER ECDSA-Sig-Value of the largest size for an order of `bytes` bytes: two INTEGERs, each maybe
   with a leading zero, in a SEQUENCE. */
static int rk_ecdsa_max_size(int bytes)
{
    int integer = 2 + bytes + 1;
    int content = 2 * integer;
    return content + (content < 128 ? 2 : 3);
}

static int rk_ec_curve_nid(const char *group)
{
    int nid = OBJ_txt2nid(group);
    return nid != NID_undef ? nid : EC_curve_nist2nid(group);
}

static int rk_import_ec(pausetls_rk_key *key, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;
    const char *group = NULL;
    const void *pub = NULL;
    size_t pub_len = 0;
    EC_GROUP *curve;

    p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME);
    if (p == NULL || !OSSL_PARAM_get_utf8_string_ptr(p, &group) || strlen(group) >= sizeof key->group)
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PUB_KEY);
    if (p == NULL || !OSSL_PARAM_get_octet_string_ptr(p, &pub, &pub_len) || pub_len == 0)
        return 0;
    curve = EC_GROUP_new_by_curve_name(rk_ec_curve_nid(group));
    if (curve == NULL)
        return 0;
    key->bits = EC_GROUP_order_bits(curve);
    EC_GROUP_free(curve);
    key->security_bits = key->bits / 2;
    key->max_size = rk_ecdsa_max_size((key->bits + 7) / 8);
    strcpy(key->group, group);
    key->pub = OPENSSL_memdup(pub, pub_len);
    key->pub_len = pub_len;
    return key->pub != NULL;
}

static int rk_import_rsa(pausetls_rk_key *key, const OSSL_PARAM params[])
{
    const OSSL_PARAM *n = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_N);
    const OSSL_PARAM *e = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_E);

    if (n == NULL || e == NULL || !OSSL_PARAM_get_BN(n, &key->n) || !OSSL_PARAM_get_BN(e, &key->e))
        return 0;
    key->bits = BN_num_bits(key->n);
    key->security_bits = BN_security_bits(key->bits, -1);
    key->max_size = BN_num_bytes(key->n);
    return 1;
}

static int rk_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    pausetls_rk_key *key = keydata;
    const OSSL_PARAM *p;

    if (key == NULL || rk_has_public(key) || (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) == 0)
        return 0;
    p = OSSL_PARAM_locate_const(params, PAUSETLS_RK_SIGNER_PARAM);
    if (p != NULL && !OSSL_PARAM_get_size_t(p, &key->signer))
        return 0;
    return key->is_rsa ? rk_import_rsa(key, params) : rk_import_ec(key, params);
}

static const OSSL_PARAM rk_ec_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END
};

static const OSSL_PARAM rk_rsa_types[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END
};

static const OSSL_PARAM *rk_ec_io_types(int selection)
{
    return rk_ec_types;
}

static const OSSL_PARAM *rk_rsa_io_types(int selection)
{
    return rk_rsa_types;
}

/* Only the public half exists here: that is what X509_check_private_key compares. */
static int rk_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    pausetls_rk_key *key = keydata;
    OSSL_PARAM_BLD *bld;
    OSSL_PARAM *params = NULL;
    int ok = 0;

    if (key == NULL || !rk_has_public(key) || (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) == 0)
        return 0;
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL)
        return 0;
    if (key->is_rsa ? OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, key->n)
                          && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, key->e)
                    : OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, key->group, 0)
                          && OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, key->pub,
                                                              key->pub_len))
        params = OSSL_PARAM_BLD_to_param(bld);
    if (params != NULL)
        ok = cb(params, cbarg);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return ok;
}

static int rk_match(const void *keydata1, const void *keydata2, int selection)
{
    const pausetls_rk_key *a = keydata1, *b = keydata2;

    if (a == NULL || b == NULL || a->is_rsa != b->is_rsa)
        return 0;
    if (!a->is_rsa && strcmp(a->group, b->group) != 0
        && rk_ec_curve_nid(a->group) != rk_ec_curve_nid(b->group))
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0)
        return 1;
    if (!rk_has_public(a) || !rk_has_public(b))
        return 0;
    if (a->is_rsa)
        return BN_cmp(a->n, b->n) == 0 && BN_cmp(a->e, b->e) == 0;
    return a->pub_len == b->pub_len && memcmp(a->pub, b->pub, a->pub_len) == 0;
}

static int rk_get_params(void *keydata, OSSL_PARAM params[])
{
    pausetls_rk_key *key = keydata;
    OSSL_PARAM *p;

    if (key == NULL)
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_BITS)) != NULL && !OSSL_PARAM_set_int(p, key->bits))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_SECURITY_BITS)) != NULL
        && !OSSL_PARAM_set_int(p, key->security_bits))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE)) != NULL
        && !OSSL_PARAM_set_int(p, key->max_size))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST)) != NULL
        && !OSSL_PARAM_set_utf8_string(p, "SHA256"))
        return 0;
    if (!key->is_rsa && (p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL
        && !OSSL_PARAM_set_utf8_string(p, key->group))
        return 0;
    if ((p = OSSL_PARAM_locate(params, PAUSETLS_RK_SIGNER_PARAM)) != NULL && !OSSL_PARAM_set_size_t(p, key->signer))
        return 0;
    return 1;
}

static const OSSL_PARAM *rk_gettable_params(void *provctx)
{
    static const OSSL_PARAM gettable[] = {
        OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
        OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_size_t(PAUSETLS_RK_SIGNER_PARAM, NULL),
        OSSL_PARAM_END
    };
    return gettable;
}

static const char *rk_query_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? PAUSETLS_RK_SIGNATURE : NULL;
}

#define PAUSETLS_RK_KEYMGMT(new_fn, io_types)                                                     \
    {                                                                                             \
        { OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))new_fn },                                        \
        { OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))rk_free },                                      \
        { OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))rk_has },                                        \
        { OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))rk_match },                                    \
        { OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))rk_import },                                  \
        { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))io_types },                             \
        { OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))rk_export },                                  \
        { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))io_types },                             \
        { OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))rk_get_params },                          \
        { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))rk_gettable_params },                \
        { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))rk_query_operation_name },      \
        { 0, NULL }                                                                               \
    }

static const OSSL_DISPATCH rk_ec_keymgmt[] = PAUSETLS_RK_KEYMGMT(rk_new_ec, rk_ec_io_types);
static const OSSL_DISPATCH rk_rsa_keymgmt[] = PAUSETLS_RK_KEYMGMT(rk_new_rsa, rk_rsa_io_types);

/* -- signature: hash here, then ask Python to sign the digest ------------------------------- */

typedef struct {
    pausetls_rk_key *key;
    EVP_MD_CTX *hash;
    int pad;                 /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
    int saltlen;             /* RSA_PSS_SALTLEN_* or a byte count */
    char mgf1[32];           /* "" means: the message digest */
} pausetls_rk_sig;

static void *rk_sig_new(void *provctx, const char *propq)
{
    pausetls_rk_sig *ctx = OPENSSL_zalloc(sizeof(pausetls_rk_sig));
    if (ctx != NULL) {
        ctx->pad = RSA_PKCS1_PADDING;
        ctx->saltlen = RSA_PSS_SALTLEN_DIGEST;
    }
    return ctx;
}

static void rk_sig_free(void *vctx)
{
    pausetls_rk_sig *ctx = vctx;
    if (ctx != NULL) {
        EVP_MD_CTX_free(ctx->hash);
        OPENSSL_free(ctx);
    }
}

static void *rk_sig_dup(void *vctx)
{
    pausetls_rk_sig *src = vctx, *dst = OPENSSL_memdup(src, sizeof(*src));

    if (dst == NULL)
        return NULL;
    dst->hash = NULL;
    if (src->hash != NULL
        && ((dst->hash = EVP_MD_CTX_new()) == NULL || !EVP_MD_CTX_copy_ex(dst->hash, src->hash))) {
        rk_sig_free(dst);
        return NULL;
    }
    return dst;
}

static int rk_sig_set_params(void *vctx, const OSSL_PARAM params[])
{
    pausetls_rk_sig *ctx = vctx;
    const OSSL_PARAM *p;
    const char *text;

    /* libssl sets the padding as an int (ctrl translation) and the salt length as text ("digest") */
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE)) != NULL) {
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!OSSL_PARAM_get_utf8_string_ptr(p, &text))
                return 0;
            if (strcmp(text, "pss") == 0)
                ctx->pad = RSA_PKCS1_PSS_PADDING;
            else if (strcmp(text, "pkcs1") == 0)
                ctx->pad = RSA_PKCS1_PADDING;
            else
                return 0;
        } else if (!OSSL_PARAM_get_int(p, &ctx->pad)) {
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN)) != NULL) {
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!OSSL_PARAM_get_utf8_string_ptr(p, &text))
                return 0;
            if (strcmp(text, "digest") == 0)
                ctx->saltlen = RSA_PSS_SALTLEN_DIGEST;
            else if (strcmp(text, "max") == 0)
                ctx->saltlen = RSA_PSS_SALTLEN_MAX;
            else if (strcmp(text, "auto") == 0)
                ctx->saltlen = RSA_PSS_SALTLEN_AUTO;
            else
                ctx->saltlen = atoi(text);
        } else if (!OSSL_PARAM_get_int(p, &ctx->saltlen)) {
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &text) || strlen(text) >= sizeof ctx->mgf1)
            return 0;
        strcpy(ctx->mgf1, text);
    }
    return 1;
}

static const OSSL_PARAM *rk_sig_settable_params(void *vctx, void *provctx)
{
    static const OSSL_PARAM settable[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_END
    };
    return settable;
}

/* Only the hashes TLS 1.2 and 1.3 sign with; libssl skips a signature scheme whose init fails. */
static int rk_supported_digest(const EVP_MD *md)
{
    return EVP_MD_is_a(md, "SHA2-256") || EVP_MD_is_a(md, "SHA2-384") || EVP_MD_is_a(md, "SHA2-512");
}

static int rk_digest_sign_init(void *vctx, const char *mdname, void *keydata, const OSSL_PARAM params[])
{
    pausetls_rk_sig *ctx = vctx;
    EVP_MD *md;
    int ok;

    if (keydata != NULL)
        ctx->key = keydata;
    if (ctx->key == NULL || ctx->key->signer == 0 || mdname == NULL)
        return 0;
    md = EVP_MD_fetch(NULL, mdname, NULL);
    if (md == NULL || !rk_supported_digest(md)) {
        EVP_MD_free(md);
        return 0;
    }
    if (ctx->hash == NULL)
        ctx->hash = EVP_MD_CTX_new();
    ok = ctx->hash != NULL && EVP_DigestInit_ex(ctx->hash, md, NULL) && rk_sig_set_params(ctx, params);
    EVP_MD_free(md);
    return ok;
}

static int rk_digest_sign_update(void *vctx, const unsigned char *data, size_t len)
{
    pausetls_rk_sig *ctx = vctx;
    return ctx->hash != NULL && EVP_DigestUpdate(ctx->hash, data, len);
}

/* The TLS SignatureScheme name (RFC 8446 4.2.3) for this key, digest and padding; NULL if none. */
static const char *rk_scheme(const pausetls_rk_sig *ctx, const EVP_MD *md)
{
    int bits = EVP_MD_get_size(md) * 8;

    if (!ctx->key->is_rsa)
        return bits == 256 ? "ecdsa_secp256r1_sha256"
             : bits == 384 ? "ecdsa_secp384r1_sha384"
             : bits == 512 ? "ecdsa_secp521r1_sha512" : NULL;
    if (ctx->pad == RSA_PKCS1_PADDING)
        return bits == 256 ? "rsa_pkcs1_sha256"
             : bits == 384 ? "rsa_pkcs1_sha384"
             : bits == 512 ? "rsa_pkcs1_sha512" : NULL;
    if (ctx->pad != RSA_PKCS1_PSS_PADDING)
        return NULL;
    /* rsa_pss_rsae_*: MGF1 with the same hash and a salt as long as the hash */
    if (ctx->mgf1[0] != '\0' && !EVP_MD_is_a(md, ctx->mgf1))
        return NULL;
    if (ctx->saltlen != RSA_PSS_SALTLEN_DIGEST && ctx->saltlen != EVP_MD_get_size(md))
        return NULL;
    return bits == 256 ? "rsa_pss_rsae_sha256"
         : bits == 384 ? "rsa_pss_rsae_sha384"
         : bits == 512 ? "rsa_pss_rsae_sha512" : NULL;
}

static int rk_digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    pausetls_rk_sig *ctx = vctx;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    const char *scheme;

    if (ctx->hash == NULL || ctx->key == NULL)
        return 0;
    if (sig == NULL) {
        *siglen = (size_t)ctx->key->max_size;
        return 1;
    }
    scheme = rk_scheme(ctx, EVP_MD_CTX_get0_md(ctx->hash));
    if (scheme == NULL || !EVP_DigestFinal_ex(ctx->hash, digest, &digest_len))
        return 0;
    return pausetls_remote_sign(ctx->key->signer, scheme, digest, digest_len, sig, siglen, sigsize);
}

static const OSSL_DISPATCH rk_signature[] = {
    { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))rk_sig_new },
    { OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))rk_sig_free },
    { OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))rk_sig_dup },
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))rk_digest_sign_init },
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))rk_digest_sign_update },
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))rk_digest_sign_final },
    { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))rk_sig_set_params },
    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))rk_sig_settable_params },
    { 0, NULL }
};

/* -- the provider and its library context ----------------------------------------------------- */

static const OSSL_ALGORITHM rk_keymgmts[] = {
    { "EC:id-ecPublicKey:1.2.840.10045.2.1", PAUSETLS_RK_PROPS, rk_ec_keymgmt, NULL },
    { "RSA:rsaEncryption:1.2.840.113549.1.1.1", PAUSETLS_RK_PROPS, rk_rsa_keymgmt, NULL },
    { NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM rk_signatures[] = {
    { PAUSETLS_RK_SIGNATURE, PAUSETLS_RK_PROPS, rk_signature, NULL },
    { NULL, NULL, NULL, NULL }
};

static const OSSL_ALGORITHM *rk_query(void *provctx, int operation_id, int *no_cache)
{
    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_KEYMGMT:
        return rk_keymgmts;
    case OSSL_OP_SIGNATURE:
        return rk_signatures;
    }
    return NULL;
}

static const OSSL_DISPATCH rk_provider_functions[] = {
    { OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))rk_query },
    { 0, NULL }
};

static int rk_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                            const OSSL_DISPATCH **out, void **provctx)
{
    *out = rk_provider_functions;
    *provctx = (void *)handle;
    return 1;
}

static OSSL_LIB_CTX *pausetls_rk_libctx;
static CRYPTO_ONCE pausetls_rk_once = CRYPTO_ONCE_STATIC_INIT;

/* The library context holding only this provider, made once for the process (cffi releases the
   GIL around C calls, so two threads may get here together). */
static void pausetls_rk_make_libctx(void)
{
    OSSL_LIB_CTX *libctx = OSSL_LIB_CTX_new();

    if (libctx == NULL)
        return;
    if (!OSSL_PROVIDER_add_builtin(libctx, PAUSETLS_RK_PROVIDER, rk_provider_init)
        || OSSL_PROVIDER_load(libctx, PAUSETLS_RK_PROVIDER) == NULL) {
        OSSL_LIB_CTX_free(libctx);
        return;
    }
    pausetls_rk_libctx = libctx;
}

static int pausetls_remote_key_setup(void)
{
    return CRYPTO_THREAD_run_once(&pausetls_rk_once, pausetls_rk_make_libctx) && pausetls_rk_libctx != NULL;
}

/* Export the public half of `public_key` (a certificate's) into a new remote key signed by
   `signer`; NULL on failure (an unsupported key type among them). */
static EVP_PKEY *pausetls_remote_key_new(EVP_PKEY *public_key, size_t signer)
{
    const char *type = EVP_PKEY_is_a(public_key, "RSA") ? "RSA" : EVP_PKEY_is_a(public_key, "EC") ? "EC" : NULL;
    OSSL_PARAM *exported = NULL, *merged = NULL;
    OSSL_PARAM extra[2];
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *key = NULL;

    if (type == NULL || !pausetls_remote_key_setup())
        return NULL;
    extra[0] = OSSL_PARAM_construct_size_t(PAUSETLS_RK_SIGNER_PARAM, &signer);
    extra[1] = OSSL_PARAM_construct_end();
    if (EVP_PKEY_todata(public_key, EVP_PKEY_PUBLIC_KEY, &exported)
        && (merged = OSSL_PARAM_merge(exported, extra)) != NULL
        && (pctx = EVP_PKEY_CTX_new_from_name(pausetls_rk_libctx, type, PAUSETLS_RK_PROPS)) != NULL
        && EVP_PKEY_fromdata_init(pctx) > 0
        && EVP_PKEY_fromdata(pctx, &key, EVP_PKEY_PUBLIC_KEY, merged) > 0) {
        /* key made */
    }
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(merged);
    OSSL_PARAM_free(exported);
    return key;
}

/* Keep only the TLS 1.2 suites whose key exchange is not static RSA: a remote key cannot decrypt
   a premaster secret.  Returns SSL_CTX_set_cipher_list's answer (0 when none is left). */
static int pausetls_disable_static_rsa(SSL_CTX *ctx)
{
    STACK_OF(SSL_CIPHER) *ciphers = SSL_CTX_get_ciphers(ctx);
    BIO *names = BIO_new(BIO_s_mem());
    char *text = NULL;
    long len;
    int i, ok = 0;

    if (names == NULL)
        return 0;
    for (i = 0; ciphers != NULL && i < sk_SSL_CIPHER_num(ciphers); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(ciphers, i);
        int kx = SSL_CIPHER_get_kx_nid(c);
        if (kx != NID_kx_rsa && kx != NID_kx_any)  /* kx_any: a TLS 1.3 suite, set apart */
            BIO_printf(names, "%s%s", ok++ ? ":" : "", SSL_CIPHER_get_name(c));
    }
    BIO_write(names, "", 1);
    len = BIO_get_mem_data(names, &text);
    ok = len > 1 && SSL_CTX_set_cipher_list(ctx, text);
    BIO_free(names);
    return ok;
}


/* The signer id `key` carries if it is one of this provider's keys; 0 for any other key. */
static size_t rk_signer_of(EVP_PKEY *key)
{
    const OSSL_PROVIDER *prov = key == NULL ? NULL : EVP_PKEY_get0_provider(key);
    size_t signer = 0;

    if (prov == NULL || strcmp(OSSL_PROVIDER_get0_name(prov), PAUSETLS_RK_PROVIDER) != 0
        || !EVP_PKEY_get_size_t_param(key, PAUSETLS_RK_SIGNER_PARAM, &signer))
        return 0;
    return signer;
}

/* Into *signer: the signer of `ctx`'s private key of `type` ("RSA" or "EC"), 0 when that key is
   local or missing.  libssl keeps one key per certificate type and shows only the "current" one;
   the walk runs on a throwaway SSL (a copy of the context's certificates) because moving the
   context's current certificate would change where later chain certificates go.  0 on failure. */
static int pausetls_remote_signer_for(SSL_CTX *ctx, const char *type, size_t *signer)
{
    SSL *ssl = SSL_new(ctx);
    int more;

    if (ssl == NULL)
        return 0;
    *signer = 0;
    for (more = SSL_set_current_cert(ssl, SSL_CERT_SET_FIRST); more > 0;
         more = SSL_set_current_cert(ssl, SSL_CERT_SET_NEXT)) {
        EVP_PKEY *key = SSL_get_privatekey(ssl);
        if (key != NULL && EVP_PKEY_is_a(key, type))
            *signer = rk_signer_of(key);
    }
    SSL_free(ssl);
    return 1;
}
