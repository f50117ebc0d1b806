//! Image and store commands: images, history, inspect, tag, rmi, save, load, import, image/system
//! (owned by the store issue).

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    pub reference: Option<String>,
}
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    pub image: String,
}
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    pub images: Vec<String>,
}
#[derive(clap::Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}
#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    pub images: Vec<String>,
}
#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    pub images: Vec<String>,
}
#[derive(clap::Args, Debug)]
pub struct LoadArgs {}
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    pub file: String,
    pub reference: Option<String>,
}
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Remove unused images
    Prune,
}
#[derive(clap::Subcommand, Debug)]
pub enum SystemCommand {
    /// Verify every blob and reference of the store
    Check,
    /// Remove what nothing references
    Prune,
}

pub fn images(_a: ImagesArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("images")
}
pub fn history(_a: HistoryArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("history")
}
pub fn inspect(_a: InspectArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("inspect")
}
pub fn tag(_a: TagArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("tag")
}
pub fn rmi(_a: RmiArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("rmi")
}
pub fn save(_a: SaveArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("save")
}
pub fn load(_a: LoadArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("load")
}
pub fn import(_a: ImportArgs, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("import")
}
pub fn image_command(_c: ImageCommand, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("image")
}
pub fn system_command(_c: SystemCommand, _g: &Global) -> anyhow::Result<i32> {
    super::not_yet("system")
}
