mod error;
mod yaml;
pub use error::{PatchError, Pos, Located};
