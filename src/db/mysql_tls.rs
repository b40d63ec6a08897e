//! The URL's `ssl-mode` on MySQL / MariaDB connections (SPEC "Backends").
//!
//! Diesel opens a MySQL connection from its URL alone and hands `ssl_mode` to the client
//! library as `MYSQL_OPT_SSL_MODE`. MySQL's own library (libmysqlclient) knows that option;
//! MariaDB's (Connector/C, what Debian's `libmariadb-dev` installs) does not — mysqlclient-sys
//! maps it to an unrelated option there — and instead has `MYSQL_OPT_SSL_ENFORCE` (TLS or no
//! connection) and `MYSQL_OPT_SSL_VERIFY_SERVER_CERT` (the certificate must name the host).
//! Diesel gives no way to set an option before it connects, so on MariaDB's library this file
//! stands in front of `mysql_real_connect`: the executable's definition below takes the calls
//! Diesel makes (a definition in the program comes before one in a shared library), sets what
//! the mode of the connection being opened on this thread asks for, and calls the library's
//! own function, found with `dlsym(RTLD_NEXT)`. Every verification and its error message stay
//! the client library's.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::sync::OnceLock;

use crate::config::MysqlSslMode;

/// Whether the linked client library reads `ssl_mode` itself (libmysqlclient), so that Diesel
/// can pass it in the URL.
pub(super) const LIBRARY_READS_SSL_MODE: bool = mysqlclient_sys::SUPPORTS_MYSQL_SSL_MODE;

/// Connector/C's option numbers (`enum mysql_option` in its mysql.h), stable across its 3.x.
const MYSQL_OPT_SSL_VERIFY_SERVER_CERT: c_uint = 21;
const MYSQL_OPT_SSL_ENFORCE: c_uint = 38;

thread_local! {
    /// The mode of the connection [`with_ssl_mode`] is opening on this thread.
    static MODE: Cell<Option<MysqlSslMode>> = const { Cell::new(None) };
    /// Set when the library refused one of the options above.
    static REFUSED: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Runs `connect` (one `MysqlConnection::establish`) with `mode` applied to the connection it
/// opens; an error when the client library refused an option.
pub(super) fn with_ssl_mode<T>(
    mode: MysqlSslMode,
    connect: impl FnOnce() -> T,
) -> Result<T, String> {
    /// Clears the mode also when `connect` panics, so no later connection inherits it.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            MODE.with(|m| m.set(None));
        }
    }
    // The reference keeps the definition below in every program that links this library.
    std::hint::black_box(mysql_real_connect as RealConnect);
    MODE.with(|m| m.set(Some(mode)));
    REFUSED.with(|r| r.set(None));
    let reset = Reset;
    let result = connect();
    drop(reset);
    match REFUSED.with(Cell::take) {
        Some(option) => Err(format!(
            "the MySQL client library does not support {option} (ssl-mode={})",
            mode.as_str()
        )),
        None => Ok(result),
    }
}

type RealConnect = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    *const c_char,
    *const c_char,
    *const c_char,
    c_uint,
    *const c_char,
    c_ulong,
) -> *mut c_void;

extern "C" {
    fn mysql_options(mysql: *mut c_void, option: c_uint, arg: *const c_void) -> c_int;
}

fn real_connect() -> RealConnect {
    static REAL: OnceLock<usize> = OnceLock::new();
    let address = *REAL.get_or_init(|| {
        let name: &CStr = c"mysql_real_connect";
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds the client library's
        // definition, the next one after this program's.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
    });
    if address == 0 {
        // Start-up cannot go on without the client library's connect (it is linked, so this
        // does not happen); returning would look to Diesel like a connection.
        eprintln!("the MySQL client library has no mysql_real_connect");
        std::process::abort();
    }
    // SAFETY: the address of the library's mysql_real_connect, whose C signature this is.
    unsafe { std::mem::transmute::<usize, RealConnect>(address) }
}

/// The client library's `mysql_real_connect`, after the options [`with_ssl_mode`] asked for.
///
/// # Safety
/// As the client library's own: `mysql` a handle from `mysql_init`, the strings NUL-terminated
/// or null.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mysql_real_connect(
    mysql: *mut c_void,
    host: *const c_char,
    user: *const c_char,
    password: *const c_char,
    database: *const c_char,
    port: c_uint,
    unix_socket: *const c_char,
    client_flag: c_ulong,
) -> *mut c_void {
    if let Some(mode) = MODE.with(Cell::get) {
        let on: c_char = 1;
        let set = |option: c_uint, name: &'static str| {
            // SAFETY: a boolean option of Connector/C, read from a `my_bool` (a char).
            let refused =
                unsafe { mysql_options(mysql, option, (&on as *const c_char).cast()) } != 0;
            if refused {
                REFUSED.with(|r| r.set(Some(name)));
            }
        };
        if mode.requires_tls() {
            set(MYSQL_OPT_SSL_ENFORCE, "MYSQL_OPT_SSL_ENFORCE");
        }
        if mode == MysqlSslMode::VerifyIdentity {
            set(
                MYSQL_OPT_SSL_VERIFY_SERVER_CERT,
                "MYSQL_OPT_SSL_VERIFY_SERVER_CERT",
            );
        }
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    unsafe {
        real_connect()(
            mysql,
            host,
            user,
            password,
            database,
            port,
            unix_socket,
            client_flag,
        )
    }
}
